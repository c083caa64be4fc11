"""`tinyimg router` in front of real `tinyimg serve` processes with the tiny pipelines."""

from __future__ import annotations

import asyncio
import base64

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import free_port, running_router, start_servers
from tests.support.tiny_models import tiny_model_dirs  # noqa: F401  (the fixture)

# The slow backend serves the same model name with far more work per request: about 20x the default
# (4 steps at 64x64), clearly slower even on a busy machine.
SLOW = {"defaults": {"steps": 20, "width": 256, "height": 256}}


@pytest.fixture(scope="module")
def servers(tiny_model_dirs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("router-static")
    procs = start_servers(
        {
            "both": (("sdxl", "flux"), {}),
            "flux-b": (("flux",), {}),
            "flux-slow": (("flux",), SLOW),
        },
        tiny_model_dirs,
        tmp,
    )
    yield procs, tmp
    for proc in procs.values():
        proc.stop()


def backend_flags(**models: list[str]) -> list[str]:
    return [f"--backend={m}={u}" for m, urls in models.items() for u in urls]


def served(url: str, model: str) -> int:
    return httpx.get(url + "/status").json()["models"][model]["served"]


def sample(metrics_text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_models_status_and_health_merge_every_backend(servers):
    procs, tmp = servers
    dead = f"http://127.0.0.1:{free_port()}"
    flags = backend_flags(
        **{"tiny-sdxl": [procs["both"].url], "tiny-flux": [procs["both"].url, procs["flux-b"].url], "ghost": [dead]}
    )
    with running_router(flags, tmp) as router:
        models = {m["name"]: m for m in httpx.get(router.url + "/models").json()["models"]}
        assert sorted(models) == ["ghost", "tiny-flux", "tiny-sdxl"]
        assert (models["tiny-flux"]["family"], models["tiny-flux"]["state"]) == ("flux", "ready")
        assert (models["tiny-flux"]["ready_replicas"], models["tiny-flux"]["replicas"]) == (2, 2)
        assert (models["tiny-sdxl"]["family"], models["tiny-sdxl"]["ready_replicas"]) == ("sdxl", 1)
        assert (models["ghost"]["state"], models["ghost"]["ready_replicas"], models["ghost"]["replicas"]) == (
            "unavailable", 0, 1,
        )

        status = httpx.get(router.url + "/status").json()
        pods = {p["url"]: p for p in status["pods"]}
        assert pods[dead]["reachable"] is False and "error" in pods[dead]
        assert pods[procs["both"].url]["models"] == ["tiny-flux", "tiny-sdxl"]
        direct = [httpx.get(u + "/status").json() for u in (procs["both"].url, procs["flux-b"].url)]
        expected_served = sum(m["served"] for d in direct for m in d["models"].values())
        assert status["totals"]["served"] == expected_served
        assert (status["totals"]["pods"], status["totals"]["reachable_pods"], status["totals"]["unreachable_pods"]) == (3, 2, 1)

        assert httpx.get(router.url + "/health").json() == {"status": "ok"}
        ready = httpx.get(router.url + "/health/ready")
        assert ready.status_code == 200
        assert ready.json()["models"]["tiny-flux"] == {"state": "ready", "ready_replicas": 2, "replicas": 2}
        assert ready.json()["models"]["ghost"]["ready_replicas"] == 0


def test_generate_streams_the_backend_answer_unchanged_with_the_request_id(servers):
    procs, tmp = servers
    body = {"model": "tiny-flux", "prompt": "a red fox", "seed": 7}
    with running_router(backend_flags(**{"tiny-flux": [procs["flux-b"].url]}), tmp) as router:
        via_router = httpx.post(router.url + "/generate", json=body, headers={"Accept": "image/png", "X-Request-ID": "rid-42"}, timeout=60)
        direct = httpx.post(procs["flux-b"].url + "/generate", json=body, headers={"Accept": "image/png"}, timeout=60)
        assert via_router.status_code == 200, via_router.text
        assert via_router.headers["x-request-id"] == "rid-42"
        assert via_router.headers["content-type"] == "image/png"
        assert via_router.content == direct.content and via_router.content.startswith(b"\x89PNG")

        as_json = httpx.post(router.url + "/generate", json=body, timeout=60).json()
        assert base64.b64decode(as_json["images"][0]["b64"]) == direct.content
        assert as_json["images"][0]["seed"] == 7

        invalid = httpx.post(router.url + "/generate", json={**body, "steps": 10_000}, timeout=60)
        assert invalid.status_code == 422  # the backend's own validation error, relayed
        assert invalid.json()["error"]["field"] == "steps"


def test_unknown_model_is_404_and_a_model_without_backend_is_503_with_retry_after(servers):
    procs, tmp = servers
    dead = f"http://127.0.0.1:{free_port()}"
    with running_router(backend_flags(**{"tiny-flux": [procs["flux-b"].url], "ghost": [dead]}), tmp) as router:
        unknown = httpx.post(router.url + "/generate", json={"model": "nope", "prompt": "x"}, headers={"X-Request-ID": "r1"})
        assert unknown.status_code == 404
        assert unknown.json() == {
            "error": {"code": "model_not_found", "message": "unknown model 'nope'; known models: ghost, tiny-flux", "request_id": "r1"}
        }
        ghost = httpx.post(router.url + "/generate", json={"model": "ghost", "prompt": "x"})
        assert ghost.status_code == 503
        assert ghost.json()["error"]["code"] == "no_ready_backend"
        assert int(ghost.headers["retry-after"]) >= 1
        metrics = httpx.get(router.url + "/metrics").text
        assert sample(metrics, "tinyimg_router_requests_total", model="_unknown", outcome="unknown_model") == 1
        assert sample(metrics, "tinyimg_router_requests_total", model="nope", outcome="unknown_model") == 0
        assert sample(metrics, "tinyimg_router_requests_total", model="ghost", outcome="no_backend") == 1
        assert sample(metrics, "tinyimg_router_ready_pods", model="tiny-flux") == 1
        assert sample(metrics, "tinyimg_router_ready_pods", model="ghost") == 0


async def run_clients(url: str, clients: int, per_client: int, body: dict) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=120) as client:

        async def loop() -> list[httpx.Response]:
            return [await client.post(url + "/generate", json=body) for _ in range(per_client)]

        results = await asyncio.gather(*(loop() for _ in range(clients)))
    return [r for rs in results for r in rs]


async def test_slow_backend_gets_fewer_requests(servers):
    procs, tmp = servers
    urls = [procs["both"].url, procs["flux-b"].url, procs["flux-slow"].url]
    before = {u: served(u, "tiny-flux") for u in urls}
    with running_router(backend_flags(**{"tiny-flux": urls}), tmp) as router:
        responses = await run_clients(router.url, clients=4, per_client=5, body={"model": "tiny-flux", "prompt": "x"})
    assert [r.status_code for r in responses] == [200] * 20
    got = {u: served(u, "tiny-flux") - before[u] for u in urls}
    assert sum(got.values()) == 20
    fast_a, fast_b, slow = got[urls[0]], got[urls[1]], got[urls[2]]
    # Round robin would give the slow one about a third (6-7 of 20). The balancer may favour one
    # fast pod over the other (whichever timed faster first), so only the slow one's share is bound.
    assert slow <= 4 and slow < max(fast_a, fast_b), got


def test_api_keys_and_rate_limit_are_enforced(servers):
    procs, tmp = servers
    keys = tmp / "keys"
    keys.write_text("# router keys\nkey-one\nkey-two\n")
    flags = backend_flags(**{"tiny-flux": [procs["flux-b"].url]})
    flags += ["--api-keys-file", str(keys), "--rate-limit", "0.5", "--rate-burst", "2"]
    with running_router(flags, tmp) as router:
        missing = httpx.post(router.url + "/generate", json={"model": "tiny-flux", "prompt": "x"})
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "unauthorized"
        assert missing.headers["www-authenticate"] == "Bearer"
        assert httpx.get(router.url + "/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(router.url + "/health").status_code == 200  # probes stay open
        assert httpx.get(router.url + "/metrics").status_code == 200

        one = {"Authorization": "Bearer key-one"}
        ok = httpx.post(router.url + "/generate", json={"model": "tiny-flux", "prompt": "x"}, headers=one, timeout=60)
        assert ok.status_code == 200
        assert httpx.get(router.url + "/models", headers=one).status_code == 200
        limited = httpx.get(router.url + "/models", headers=one)
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        # The other key has its own bucket.
        assert httpx.get(router.url + "/models", headers={"Authorization": "Bearer key-two"}).status_code == 200

        metrics = httpx.get(router.url + "/metrics").text
        assert sample(metrics, "tinyimg_router_rejected_total", reason="auth") == 2
        assert sample(metrics, "tinyimg_router_rejected_total", reason="rate_limit") == 1


def test_openai_client_generates_through_the_router_with_a_key(servers):
    openai = pytest.importorskip("openai")
    procs, tmp = servers
    keys = tmp / "openai-keys"
    keys.write_text("sk-router\n")
    flags = [*backend_flags(**{"tiny-sdxl": [procs["both"].url]}), "--api-keys-file", str(keys)]
    with running_router(flags, tmp) as router:
        client = openai.OpenAI(base_url=router.url + "/v1", api_key="sk-router", max_retries=0)
        result = client.images.generate(model="tiny-sdxl", prompt="a lighthouse", n=1, size="64x64", response_format="b64_json")
        generated = base64.b64decode(result.data[0].b64_json)
        assert generated.startswith(b"\x89PNG")
        # An edit (multipart) of that image: the router reads the model from the form.
        edited = client.images.edit(model="tiny-sdxl", image=("in.png", generated, "image/png"), prompt="at night")
        assert base64.b64decode(edited.data[0].b64_json).startswith(b"\x89PNG")
        # As generations, an edit may answer URLs: the router's, readable with the same key.
        by_url = client.images.edit(model="tiny-sdxl", image=("in.png", generated, "image/png"), prompt="at night",
                                    response_format="url")
        assert by_url.data[0].url.startswith(f"{router.url}/v1/jobs/")
        image = httpx.get(by_url.data[0].url, headers={"Authorization": "Bearer sk-router"}, timeout=30)
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=router.url + "/v1", api_key="sk-wrong", max_retries=0).images.generate(
                model="tiny-sdxl", prompt="x", size="64x64"
            )


async def wait_busy(url: str, model: str, timeout: float = 60.0) -> None:
    """Until the server has a request of ``model`` queued or generating."""
    async with httpx.AsyncClient() as client:
        for _ in range(int(timeout / 0.02)):
            load = (await client.get(url + "/status")).json()["models"][model]
            if load["queue_depth"] + load["in_flight"] >= 1:
                return
            await asyncio.sleep(0.02)
    raise AssertionError(f"{url} held no {model} request within {timeout}s")


# Last in the module: it kills the slow backend.
async def test_killed_backend_loses_no_request_and_later_ones_go_to_the_others(servers):
    procs, tmp = servers
    victim, survivor = procs["flux-slow"], procs["flux-b"]
    with running_router(backend_flags(**{"tiny-flux": [victim.url, survivor.url]}), tmp) as router:
        body = {"model": "tiny-flux", "prompt": "x"}
        run = asyncio.create_task(run_clients(router.url, clients=4, per_client=5, body=body))
        # Killed while it holds a request of the run (read from its /status): a kill between two of
        # its requests would leave nothing to retry (the balancer may send the slow pod none for a while).
        await wait_busy(victim.url, "tiny-flux")
        victim.kill()
        responses = await run
        assert [r.status_code for r in responses] == [200] * 20, [r.text[:200] for r in responses if r.status_code != 200]
        metrics = httpx.get(router.url + "/metrics").text
        assert sample(metrics, "tinyimg_router_retries_total", model="tiny-flux") >= 1

        after = [httpx.post(router.url + "/generate", json=body, timeout=60) for _ in range(3)]
        assert [r.status_code for r in after] == [200, 200, 200]
        flux = next(m for m in httpx.get(router.url + "/models").json()["models"] if m["name"] == "tiny-flux")
        assert (flux["ready_replicas"], flux["replicas"]) == (1, 2)
        status = httpx.get(router.url + "/status").json()
        assert {p["url"]: p["reachable"] for p in status["pods"]} == {victim.url: False, survivor.url: True}

    with running_router(backend_flags(**{"tiny-flux": [victim.url]}), tmp, name="router-dead") as router:
        failed = httpx.post(router.url + "/generate", json={"model": "tiny-flux", "prompt": "x"}, timeout=60)
        assert failed.status_code == 503
        assert failed.json()["error"]["code"] == "no_ready_backend"
        assert int(failed.headers["retry-after"]) >= 1
