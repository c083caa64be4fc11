"""What a changed config means for a running server (tinyimg.runtime.reload.plan_reload): live
settings apply now, weights and server settings wait for a restart, named by their wire path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fake_engine import FakeEngine
from tests.support.tiny_models import tiny_config
from tinyimg.runtime.jobrunner import JobService
from tinyimg.runtime.reload import plan_reload
from tinyimg.spec import JobsConfig, ServerConfig

DIRS = {"flux": Path("/models/flux"), "sdxl": Path("/models/sdxl")}


def edited(**overrides) -> ServerConfig:
    return tiny_config(DIRS, ("flux",), **overrides)


def test_nothing_changed_is_an_empty_plan():
    assert plan_reload(edited(), edited()).empty


@pytest.mark.parametrize("overrides", [
    {"defaults": {"steps": 9}},
    {"limits": {"maxWidth": 512}},
    {"runtime": {"maxBatchSize": 2, "maxBatchWaitMs": 5, "queueSize": 3, "requestTimeoutSeconds": 12}},
    {"adapters": [{"name": "ink", "source": "/loras/ink"}]},
])
def test_live_settings_apply_without_a_restart(overrides):
    plan = plan_reload(edited(), edited(**overrides))
    assert plan.restart == []
    assert plan.live == edited(**overrides).models


@pytest.mark.parametrize(("overrides", "path"), [
    ({"source": "/models/other"}, "models.tiny-flux.source"),
    ({"dtype": "float16"}, "models.tiny-flux.dtype"),
    ({"runtime": {"offload": "model"}}, "models.tiny-flux.runtime.offload"),
    ({"runtime": {"device": "cuda"}}, "models.tiny-flux.runtime.device"),
])
def test_weights_and_placement_wait_for_a_restart(overrides, path):
    plan = plan_reload(edited(), edited(**overrides))
    assert plan.restart == [path] and plan.live == []


def test_a_mixed_edit_applies_its_live_part_now_and_names_the_rest():
    plan = plan_reload(edited(), edited(defaults={"steps": 9}, source="/models/other"))
    assert plan.restart == ["models.tiny-flux.source"]
    (applied,) = plan.live
    assert applied.defaults.steps == 9 and applied.source == str(DIRS["flux"])  # the running weights stay


def test_models_added_or_removed_and_server_settings_wait_for_a_restart():
    both = tiny_config(DIRS, ("flux", "sdxl"))
    assert plan_reload(edited(), both).restart == ["models.tiny-sdxl: added"]
    assert plan_reload(both, edited()).restart == ["models.tiny-sdxl: removed"]
    moved = edited().model_copy(update={"port": 9999})
    assert plan_reload(edited(), moved).restart == ["port"]


def with_jobs(**jobs) -> ServerConfig:
    return edited().model_copy(update={"jobs": JobsConfig.model_validate(jobs)})


def test_live_jobs_settings_apply_and_the_others_wait_for_a_restart():
    plan = plan_reload(edited(), with_jobs(resultTtlSeconds=60, webhookAllowedHosts=["hooks.example.com"]))
    assert plan.restart == [] and plan.live == []
    assert (plan.jobs.result_ttl_seconds, plan.jobs.webhook_allowed_hosts) == (60, ["hooks.example.com"])
    plan = plan_reload(edited(), with_jobs(redisUrl="redis://queue:6379/0", progressIntervalMs=500))
    assert plan.restart == ["jobs.redisUrl"]
    assert plan.jobs.progress_interval_ms == 500 and plan.jobs.redis_url is None  # the live part only
    assert plan_reload(with_jobs(resultTtlSeconds=60), with_jobs(resultTtlSeconds=60)).empty


async def test_the_job_service_takes_new_jobs_settings():
    config = edited()
    service = JobService(FakeEngine(config), config.jobs_config(), models=config.models)
    service.apply_jobs_config(JobsConfig(resultTtlSeconds=5, maxResultBytes=4096, previewIntervalMs=250))
    assert (service.store.ttl, service.store.max_bytes, service.config.preview_interval_ms) == (5, 4096, 250)
