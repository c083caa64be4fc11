"""A backend that stalls and recovers (issue 11 item 8), and the router's own shutdown bound
(item 10), with real processes: `tinyimg router` in front of two `tinyimg serve` (tiny Flux), one of
them frozen with SIGSTOP and resumed with SIGCONT while traffic flows."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.hostile_router import run_load
from tests.support.processes import Proc, running_router, spawn, start_servers, wait_until_ready
from tests.support.tiny_models import tiny_model_dirs  # noqa: F401  (the fixture)

MODEL = "tiny-flux"
BODY = {"model": MODEL, "prompt": "a lighthouse"}
STALL_SECONDS = 6.0  # the issue saw 15 s; the estimate after a 6 s stall is as far off, and it ages the same way
RECOVERY_BOUND_SECONDS = 6.0  # after SIGCONT, the recovered backend serves its share within this
MEASURE_SECONDS = 6.0  # ... measured over this window right after the bound
FAIR_SHARE_FLOOR = 0.25  # of requests in the window (an even split is 0.5)


@pytest.fixture(scope="module")
def servers(tiny_model_dirs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile-stall")
    procs = start_servers({"flux-a": (("flux",), {}), "flux-b": (("flux",), {})}, tiny_model_dirs, tmp)
    yield procs, tmp
    for proc in procs.values():
        with contextlib.suppress(ProcessLookupError):
            proc.popen.send_signal(signal.SIGCONT)
        proc.stop()


@contextlib.contextmanager
def stopped(proc: Proc) -> Iterator[None]:
    """SIGSTOP now, SIGCONT on leaving, whatever happens in between."""
    proc.popen.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.popen.send_signal(signal.SIGCONT)


async def served(client: httpx.AsyncClient, proc: Proc) -> int:
    return (await client.get(proc.url + "/status")).json()["models"][MODEL]["served"]


async def test_a_backend_that_recovers_from_a_stall_gets_its_share_again_within_seconds(servers):
    procs, tmp = servers
    a, b = procs["flux-a"], procs["flux-b"]
    total = 2.0 + STALL_SECONDS + RECOVERY_BOUND_SECONDS + MEASURE_SECONDS + 1.0
    with running_router([f"--backend={MODEL}={a.url}", f"--backend={MODEL}={b.url}"], tmp) as router:
        load = asyncio.create_task(run_load(router.url, BODY, clients=4, seconds=total))
        await asyncio.sleep(2.0)
        with stopped(b):
            await asyncio.sleep(STALL_SECONDS)
        async with httpx.AsyncClient(timeout=30) as client:
            await asyncio.sleep(RECOVERY_BOUND_SECONDS)
            start = {p.name: await served(client, p) for p in (a, b)}
            await asyncio.sleep(MEASURE_SECONDS)
            end = {p.name: await served(client, p) for p in (a, b)}
        result = await load
    # Nothing was lost: requests caught on the frozen backend finished when it resumed.
    assert set(result.statuses()) == {200}, result.statuses()
    got = {name: end[name] - start[name] for name in end}
    share = got[b.name] / max(1, sum(got.values()))
    print(f"served in the window after recovery: {got} (share of the recovered backend {share:.2f})")
    assert share >= FAIR_SHARE_FLOOR, got


def test_router_shutdown_is_bounded_with_a_request_stuck_on_a_frozen_backend(servers):
    procs, tmp = servers
    b = procs["flux-b"]
    router = wait_until_ready(
        spawn("router-shutdown", ["router", f"--backend={MODEL}={b.url}", "--shutdown-timeout", "2"], tmp), timeout=30
    )
    statuses: list[tuple[int, str | None] | str] = []
    try:
        with stopped(b):
            def stuck() -> None:
                try:
                    r = httpx.post(router.url + "/generate", json=BODY, timeout=60)
                    statuses.append((r.status_code, r.json()["error"]["code"]))
                except (httpx.HTTPError, ValueError) as err:
                    statuses.append(type(err).__name__)

            thread = threading.Thread(target=stuck)
            thread.start()
            time.sleep(0.5)  # the request is on its way to the frozen backend
            started = time.monotonic()
            router.popen.send_signal(signal.SIGTERM)
            try:
                router.popen.wait(15)
            except subprocess.TimeoutExpired:
                pytest.fail("the router did not exit within 15 s of SIGTERM")
            took = time.monotonic() - started
            thread.join(30)
    finally:
        router.kill()
    assert took < 2 + 3, took  # the shutdown timeout, plus slack for the lifespan's own closing
    # The stuck request was answered before the process went: a JSON 503 draining a client (or
    # an ingress) retries on another replica, not uvicorn's plain-text 500.
    assert statuses == [(503, "draining")], statuses
