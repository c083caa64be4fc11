"""What a changed config means for a running server (tinyimg.runtime.reload.plan_reload): live
settings apply now, weights and server settings wait for a restart, named by their wire path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tiny_models import tiny_config
from tinyimg.runtime.reload import plan_reload
from tinyimg.spec import ServerConfig

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
