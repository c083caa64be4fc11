"""`tinyimg serve` follows its config file (a real process, the real tiny Flux pipeline): an edit
of defaults, limits or batching applies within seconds without a restart and without failing a
request; an edit of weights is reported as needing a restart (and not applied); a broken file is
reported and ignored; SIGHUP makes it read the file at once (and does not stop it)."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import yaml

from tests.support.processes import spawn, wait_until_ready
from tests.support.tiny_models import tiny_config, tiny_model_dirs  # noqa: F401  (the fixture)
from tinyimg.cli import main as tinyimg


def write(path, dirs, **overrides) -> None:
    path.write_text(yaml.safe_dump(tiny_config(dirs, ("flux",), **overrides).to_wire()))


def wait_for(check, timeout: float = 10.0) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "not seen in time"
        time.sleep(0.1)
    return time.monotonic() - start


def model(url: str) -> dict:
    return httpx.get(f"{url}/models", timeout=10).json()["models"][0]


def test_an_edited_config_file_applies_live_settings_without_a_restart(tiny_model_dirs, tmp_path):
    config = tmp_path / "config.yaml"
    write(config, tiny_model_dirs, defaults={"steps": 2})
    server = wait_until_ready(spawn("reload", ["serve", "--config", str(config)], tmp_path))
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                statuses.append(client.post(f"{server.url}/generate", json={"model": "tiny-flux", "prompt": "a kite"}).status_code)

    loop = threading.Thread(target=load)
    loop.start()
    try:
        assert model(server.url)["defaults"]["steps"] == 2
        assert httpx.get(f"{server.url}/status").json()["config"]["generation"] == 1

        write(config, tiny_model_dirs, defaults={"steps": 3}, limits={"maxSteps": 5}, runtime={"maxBatchSize": 2})
        seconds = wait_for(lambda: model(server.url)["defaults"]["steps"] == 3)
        assert seconds < 5
        assert model(server.url)["limits"]["max_steps"] == 5
        config_status = httpx.get(f"{server.url}/status").json()["config"]
        assert (config_status["generation"], config_status["restart_needed"], config_status["error"]) == (2, [], None)
        refused = httpx.post(f"{server.url}/generate", json={"model": "tiny-flux", "prompt": "x", "steps": 6})
        assert refused.status_code == 422 and refused.json()["error"]["field"] == "steps"  # the new limit
        answer = httpx.post(f"{server.url}/generate", json={"model": "tiny-flux", "prompt": "x"}, timeout=60).json()
        assert answer["parameters"]["steps"] == 3  # the new default

        write(config, tiny_model_dirs, defaults={"steps": 3}, limits={"maxSteps": 5}, runtime={"maxBatchSize": 2},
              source=str(tmp_path / "another-checkpoint"))
        wait_for(lambda: httpx.get(f"{server.url}/status").json()["config"]["restart_needed"] == ["models.tiny-flux.source"])
        assert model(server.url)["state"] == "ready"  # still serving the weights it has

        config.write_text("models: [unclosed\n")
        wait_for(lambda: httpx.get(f"{server.url}/status").json()["config"]["error"] is not None)
        assert "not valid YAML" in httpx.get(f"{server.url}/status").json()["config"]["error"]
        assert model(server.url)["defaults"]["steps"] == 3

        write(config, tiny_model_dirs, defaults={"steps": 4}, limits={"maxSteps": 5})
        server.popen.send_signal(signal.SIGHUP)  # read now; SIGHUP does not stop the server
        wait_for(lambda: model(server.url)["defaults"]["steps"] == 4, timeout=5)
        assert server.popen.poll() is None
        assert httpx.get(f"{server.url}/status").json()["config"]["generation"] == 3

        # An adapter added: loaded between batches, then requests may name it; removed: refused again.
        lora = tmp_path / "lora"
        assert tinyimg(["make-tiny-lora", "--family", "flux", "--out", str(lora)]) == 0
        named = {"model": "tiny-flux", "prompt": "x", "seed": 3, "loras": [{"name": "ink", "scale": 1.0}]}
        assert httpx.post(f"{server.url}/generate", json=named).json()["error"]["field"] == "loras.0.name"
        write(config, tiny_model_dirs, defaults={"steps": 4}, limits={"maxSteps": 5},
              adapters=[{"name": "ink", "source": str(lora)}])
        wait_for(lambda: [a["name"] for a in model(server.url)["adapters"]] == ["ink"])
        assert model(server.url)["adapters"][0]["state"] == "ready"
        with_ink = httpx.post(f"{server.url}/generate", json=named, timeout=60)
        without = httpx.post(f"{server.url}/generate", json={**named, "loras": []}, timeout=60)
        assert with_ink.status_code == 200 and with_ink.json()["images"][0] != without.json()["images"][0]
        write(config, tiny_model_dirs, defaults={"steps": 4}, limits={"maxSteps": 5})
        wait_for(lambda: model(server.url)["adapters"] == [])
        assert httpx.post(f"{server.url}/generate", json=named).status_code == 422
        assert httpx.get(f"{server.url}/status").json()["config"]["restart_needed"] == []
    finally:
        stop.set()
        loop.join(60)
        server.stop()
    assert statuses and set(statuses) == {200}, statuses
    log = server.log.read_text()
    assert '"config reloaded"' in log and "config changes that apply only after a restart" in log
