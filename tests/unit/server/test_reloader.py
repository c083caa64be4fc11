"""The config follower (tinyimg.api.reloader) against files a hostile or careless edit leaves:
garbage bytes, a half-written file, a deleted file; it reports, keeps the running settings, and
applies the next good version."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.support.fake_engine import FakeEngine
from tests.support.tiny_models import tiny_config
from tinyimg.api.reloader import ConfigReloader, ConfigSource
from tinyimg.runtime.jobrunner import JobService
from tinyimg.spec import ServerConfig, load_config

DIRS = {"flux": Path("/models/flux"), "sdxl": Path("/models/sdxl")}


def write(path: Path, **overrides) -> ServerConfig:
    config = tiny_config(DIRS, ("flux",), **overrides)
    path.write_text(yaml.safe_dump(config.to_wire()))
    return config


async def test_bad_files_are_reported_and_the_next_good_one_applies(tmp_path):
    path = tmp_path / "config.yaml"
    running = write(path, defaults={"steps": 2})
    engine = FakeEngine(running)
    jobs = JobService(engine, running.jobs_config(), models=running.models)
    seen: list[ServerConfig] = []
    reloader = ConfigReloader(ConfigSource(path, lambda: load_config(path)), running, engine, jobs, seen.append)

    for content, why in ((b"\xff\xfe\x00garbage", "not UTF-8 text"), (b"models: [", "not valid YAML"),
                         (b"models:\n  - name: UPPER\n", "models.0")):
        path.write_bytes(content)
        assert await reloader.check() is False
        assert why in reloader.error and reloader.generation == 1
        assert engine.config.models[0].defaults.steps == 2  # the running settings stay
    path.unlink()  # a deleted file: nothing to read, nothing changes
    assert await reloader.check() is False and reloader.generation == 1

    write(path, defaults={"steps": 5})
    assert await reloader.check() is True
    assert (reloader.generation, reloader.error, reloader.restart_needed) == (2, None, [])
    assert engine.config.models[0].defaults.steps == 5 and seen[-1].models[0].defaults.steps == 5
    assert await reloader.check() is False  # unchanged: nothing to do
    reloader.request()  # SIGHUP: read again even unchanged; still nothing to apply
    assert await reloader.check() is False and reloader.generation == 2


async def test_turning_on_c2pa_while_running_without_a_loaded_key_is_refused(tmp_path):
    from tests.support.signing import write_signing_key

    path = tmp_path / "config.yaml"
    running = write(path)
    engine = FakeEngine(running)
    jobs = JobService(engine, running.jobs_config(), models=running.models)  # started without a signing key
    reloader = ConfigReloader(ConfigSource(path, lambda: load_config(path)), running, engine, jobs, lambda _: None)
    cert, key = write_signing_key(tmp_path / "c2pa")
    wire = tiny_config(DIRS, ("flux",), provenance={"watermark": True}).to_wire()
    wire["models"][0]["provenance"]["c2pa"] = True
    path.write_text(yaml.safe_dump({**wire, "c2paCertFile": str(cert), "c2paKeyFile": str(key)}))
    assert await reloader.check() is False
    assert "restart the server" in reloader.error and not engine.config.models[0].provenance.c2pa
