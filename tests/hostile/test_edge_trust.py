"""Issue 11 items 9 and 15: X-Forwarded-For is believed only from configured proxies (default
none) on both services, failed API key attempts are limited per address, and /models shows a
local weights path only to a caller with a key (never through the router) while probes and
metrics stay open. Real processes."""

import math
import time

import httpx
import pytest

from tests.support.hostile_edge import API_KEY, edge_processes
from tests.support.processes import running_router
from tinyimg.core.auth import AUTH_FAILURE_BURST, AUTH_FAILURE_RATE

KEY = {"Authorization": f"Bearer {API_KEY}"}
WRONG = {"Authorization": "Bearer not-the-key"}


@pytest.fixture(scope="module")
def services(tmp_path_factory, tiny_model_dirs):
    tmp = tmp_path_factory.mktemp("edge-trust")
    with edge_processes(tmp, tiny_model_dirs, server_keys=True) as (server, router):
        yield {"server": server, "router": router, "tmp": tmp}


def spoofed(i: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"203.0.113.{i % 250}"}


@pytest.mark.parametrize("service", ["server", "router"])
def test_failed_key_attempts_are_limited_per_address_even_with_spoofed_forwarding(services, service):
    url = services[service].url + "/generate"
    started = time.monotonic()
    statuses = [
        httpx.post(url, json={"model": "tiny-sdxl", "prompt": "x"}, headers={**WRONG, **spoofed(i)}, timeout=5).status_code
        for i in range(30)
    ]
    elapsed = time.monotonic() - started
    assert statuses[:20] == [401] * 20  # a burst for mistyped keys
    # Then one attempt a second: the 401s past the burst are at most the seconds this took.
    assert statuses.count(401) <= AUTH_FAILURE_BURST + math.ceil(elapsed * AUTH_FAILURE_RATE), (elapsed, statuses)
    assert set(statuses) == {401, 429}


def test_a_spoofed_forwarded_address_does_not_get_a_fresh_rate_limit_bucket(services):
    server = services["server"]
    args = ["--backend", f"tiny-sdxl={server.url}", "--rate-limit", "0.5", "--rate-burst", "3"]
    with running_router(args, services["tmp"], name="router-limited") as router:
        started = time.monotonic()
        statuses = [httpx.get(router.url + "/models", headers=spoofed(i), timeout=5).status_code for i in range(8)]
        elapsed = time.monotonic() - started
    assert statuses[:3] == [200] * 3
    # One bucket for this client whatever it claims: past the burst, only what refilled meanwhile.
    assert statuses.count(200) <= 3 + math.ceil(elapsed * 0.5), (elapsed, statuses)
    assert 429 in statuses


def test_a_configured_proxy_is_believed(services):
    server = services["server"]
    args = ["--backend", f"tiny-sdxl={server.url}", "--rate-limit", "0.5", "--rate-burst", "1",
            "--trusted-proxy", "127.0.0.1"]
    with running_router(args, services["tmp"], name="router-behind-proxy") as router:
        statuses = [httpx.get(router.url + "/models", headers=spoofed(i), timeout=5).status_code for i in range(4)]
    assert statuses == [200] * 4  # each forwarded client address has its own bucket


def test_models_shows_a_local_path_only_to_a_caller_with_a_key(services):
    url = services["server"].url
    anonymous = httpx.get(url + "/models", timeout=5).json()["models"][0]
    keyed = httpx.get(url + "/models", headers=KEY, timeout=5).json()["models"][0]
    assert anonymous["source"] is None
    assert keyed["source"].endswith("tiny-sdxl")
    assert {k: v for k, v in keyed.items() if k != "source"} == {k: v for k, v in anonymous.items() if k != "source"}
    for path in ("/health", "/health/ready", "/metrics", "/status"):
        assert httpx.get(url + path, timeout=5).status_code == 200, path


def test_the_router_never_shows_a_backend_path_but_the_same_defaults_and_limits(services):
    served = httpx.get(services["server"].url + "/models", headers=KEY, timeout=5).json()["models"][0]
    routed = httpx.get(services["router"].url + "/models", headers=KEY, timeout=5).json()["models"][0]
    assert routed["source"] is None
    for field in ("name", "family", "state", "negative_prompt_supported", "defaults", "limits"):
        assert routed[field] == served[field], field
    for path in ("/health", "/health/ready", "/metrics"):
        assert httpx.get(services["router"].url + path, timeout=5).status_code == 200, path
