"""cache.preload's server side (tinyimg.runtime.preload): the loader's marker, the wait for it, the command."""

from __future__ import annotations

import json
import threading

import pytest
import yaml
from pydantic import ValidationError

from tinyimg.cli import main
from tinyimg.runtime.preload import marker_path, read_marker, run_preload, wait_for_preload
from tinyimg.spec import ModelSpec

PRELOADED = {"size": "10Gi", "accessMode": "ReadWriteMany", "preload": True}


def spec(source: str, **cache) -> ModelSpec:
    return ModelSpec.model_validate({"name": "m", "family": "flux", "source": source, "cache": cache or PRELOADED})


@pytest.mark.parametrize(("cache", "error"), [
    ({"preload": True}, "cache.preload fills one volume every pod reads: it needs cache.size"),
    ({"size": "10Gi", "preload": True}, "cache.accessMode ReadWriteMany"),
])
def test_preload_needs_a_shared_volume(cache, error):
    with pytest.raises(ValidationError, match=error):
        spec("org/repo", **cache)


def test_the_marker_names_the_revision_the_bytes_and_the_files(tmp_path):
    weights = tmp_path / "weights"
    (weights / "unet").mkdir(parents=True)
    (weights / "unet" / "model.safetensors").write_bytes(b"x" * 1000)
    (weights / "model_index.json").write_text("{}")
    model = spec("org/repo")
    marker = run_preload(model, tmp_path / "cache", fetcher=lambda _: weights)
    assert {k: marker[k] for k in ("model", "revision", "bytes", "files")} == {
        "model": "m", "revision": model.weight_revision(), "bytes": 1002, "files": 2}
    assert read_marker(marker_path(tmp_path / "cache", "m")) == marker
    assert not list((tmp_path / "cache" / "tinyimg-preload").glob("*.partial"))


def test_a_local_directory_is_measured_where_it_is(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "a.bin").write_bytes(b"y" * 7)
    assert run_preload(spec(str(tmp_path / "model")), tmp_path / "cache")["bytes"] == 7


def test_the_wait_ends_when_the_marker_names_this_revision(tmp_path):
    path = marker_path(tmp_path, "m")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"revision": "old"}))  # an earlier revision's: keep waiting
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 3:
            path.write_text(json.dumps({"revision": "new"}))

    assert wait_for_preload(path, "new", sleep=sleep) >= 0
    assert len(sleeps) == 3
    with pytest.raises(TimeoutError, match="did not name revision newer"):
        wait_for_preload(path, "newer", timeout=0.2)


def test_tinyimg_preload_writes_the_marker_and_the_termination_log(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "a.bin").write_bytes(b"z" * 5)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"models": [{"name": "m", "family": "flux", "source": str(tmp_path / "model"),
                                                  "cache": PRELOADED}]}))
    termination = tmp_path / "termination-log"
    termination.write_text("")
    argv = ["preload", "--config", str(config), "--model", "m", "--cache-dir", str(tmp_path / "cache"),
            "--termination-log", str(termination)]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["bytes"] == 5 and json.loads(termination.read_text()) == printed
    assert main([*argv[:3], "--model", "other"]) == 2
    assert "no model 'other'" in capsys.readouterr().err


def test_a_missing_directory_fails_the_loader_with_why(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"models": [{"name": "m", "family": "flux", "source": str(tmp_path / "gone"),
                                                  "cache": PRELOADED}]}))
    assert main(["preload", "--config", str(config), "--model", "m", "--cache-dir", str(tmp_path)]) == 1
    assert "FileNotFoundError: model directory" in capsys.readouterr().err


def test_waiting_runs_in_a_thread_without_blocking_others(tmp_path):
    path = marker_path(tmp_path, "m")
    done = threading.Event()
    threading.Thread(target=lambda: (wait_for_preload(path, "r"), done.set()), daemon=True).start()
    assert not done.wait(0.3)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"revision": "r"}))
    assert done.wait(5)
