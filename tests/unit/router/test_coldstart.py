"""The waiting room (scale from zero) on a real table, on a real event loop; the trigger is a plain
coroutine that records its calls (in a cluster it patches the ImageModel, see tests/cluster)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.imagemodels import build_imagemodel
from tinyimg.core.errors import ApiError
from tinyimg.router.coldstart import WaitingRoom
from tinyimg.router.discovery_kube import DISCOVERY_GRACE_SECONDS, build_cold_start, build_desired_table
from tinyimg.router.metrics import build_router_metrics
from tinyimg.router.table import BackendRef, BackendTable, ModelBackends

MODEL = "m"


def build_room(timeout: float | None = 5.0, capacity: int = 100):
    table = BackendTable()
    table.sync({MODEL: ModelBackends(family="sdxl", state="scaled-to-zero", cold_start_timeout=timeout, scales_from_zero=True)})
    calls: list[str] = []

    async def trigger(model: str) -> None:
        calls.append(model)

    metrics = build_router_metrics()
    return WaitingRoom(table, metrics, trigger, capacity=capacity), table, calls, metrics


def pod_ready(table: BackendTable) -> None:
    table.sync({MODEL: ModelBackends(family="sdxl", cold_start_timeout=5.0, scales_from_zero=True,
                                     backends=(BackendRef(url="http://10.0.0.9:8000", name="p"),))})


async def stays() -> bool:
    return False


def sample(metrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_only_autoscaled_models_without_a_ready_pod_are_held():
    room, table, _, _ = build_room()
    assert room.holds(MODEL) and not room.holds("unknown")
    pod_ready(table)
    assert not room.holds(MODEL)
    plain, _, _, _ = build_room(timeout=None)
    assert not plain.holds(MODEL)  # autoscaling off: refused at once, as before


def test_ten_waiters_share_one_trigger_and_all_go_on_when_a_pod_is_ready():
    async def scenario():
        room, table, calls, metrics = build_room()
        waiters = [asyncio.create_task(room.hold(MODEL, stays)) for _ in range(10)]
        await asyncio.sleep(0.3)
        assert room.waiting[MODEL] == 10 and calls == [MODEL]
        assert sample(metrics, "tinyimg_router_waiting_requests", model=MODEL) == 10
        pod_ready(table)
        await asyncio.wait_for(asyncio.gather(*waiters), 2)
        assert room.waiting == {} and calls == [MODEL]
        assert sample(metrics, "tinyimg_router_held_requests_total", model=MODEL, outcome="ready") == 10
        assert sample(metrics, "tinyimg_router_cold_start_duration_seconds_count", model=MODEL) == 10
        assert sample(metrics, "tinyimg_router_demand_triggers_total", model=MODEL) == 1

    asyncio.run(scenario())


def test_a_new_cold_start_after_the_room_emptied_triggers_again():
    async def scenario():
        room, _, calls, _ = build_room(timeout=0.2)
        for _ in range(2):
            with pytest.raises(ApiError):
                await room.hold(MODEL, stays)
        assert calls == [MODEL, MODEL]

    asyncio.run(scenario())


def test_timeout_is_503_with_retry_after_and_a_clear_code():
    async def scenario():
        room, _, _, metrics = build_room(timeout=0.3)
        with pytest.raises(ApiError) as err:
            await room.hold(MODEL, stays)
        assert (err.value.status, err.value.code) == (503, "cold_start_timeout")
        assert err.value.retry_after and "0.3s" in str(err.value)
        assert room.waiting == {}
        assert sample(metrics, "tinyimg_router_held_requests_total", model=MODEL, outcome="timeout") == 1

    asyncio.run(scenario())


def test_a_full_room_refuses_at_once():
    async def scenario():
        room, _, _, _ = build_room(capacity=2)
        held = [asyncio.create_task(room.hold(MODEL, stays)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(ApiError) as err:
            await room.hold(MODEL, stays)
        assert (err.value.status, err.value.code) == (503, "waiting_room_full") and err.value.retry_after
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        assert room.waiting == {}  # cancelled waits (a server shutting down) free their slots too

    asyncio.run(scenario())


def test_a_client_that_leaves_frees_its_slot():
    async def scenario():
        room, _, _, _ = build_room(capacity=1)
        gone = asyncio.Event()

        async def disconnected() -> bool:
            return gone.is_set()

        task = asyncio.create_task(room.hold(MODEL, disconnected))
        await asyncio.sleep(0.05)
        assert room.waiting[MODEL] == 1
        gone.set()
        with pytest.raises(ApiError) as err:
            await task
        assert err.value.status == 499 and room.waiting == {}

    asyncio.run(scenario())


def imagemodel(autoscaling=None, desired=None, degraded=False):
    status = {"conditions": [{"type": "Degraded", "status": "True" if degraded else "False", "message": "bad"}]}
    if desired is not None:
        status["autoscaling"] = {"desiredReplicas": desired}
    return build_imagemodel(MODEL, status=status, **({"autoscaling": autoscaling} if autoscaling else {}))


@pytest.mark.parametrize(("obj", "expected"), [
    (imagemodel(), (None, None, None)),
    (imagemodel({"enabled": False}), (None, None, None)),
    (imagemodel({"enabled": True, "coldStartTimeoutSeconds": 30}, desired=0), (30.0, "scaled-to-zero")),
    (imagemodel({"enabled": True}, desired=1), (600.0, "starting")),
], ids=["no-autoscaling", "autoscaling-off", "at-zero", "starting-with-default-timeout"])
def test_build_cold_start(obj, expected):
    assert build_cold_start(obj)[: len(expected)] == expected


@pytest.mark.parametrize(("autoscaler", "held"), [("builtin", True), ("keda", True), ("hpa", False), ("none", False)])
def test_a_model_at_zero_is_held_only_where_the_autoscaler_can_wake_it(autoscaler, held):
    """KEDA wakes a model from the router's waiting-requests metric, the built-in autoscaler from
    the demand annotation; with an HPA (never below 1) or none, holding would only delay a 503."""
    obj = imagemodel({"enabled": True, "coldStartTimeoutSeconds": 30}, desired=0)
    assert (build_cold_start(obj, autoscaler)[0] is not None) == held
    table = build_desired_table({"a": obj}, {}, {}, {}, autoscaler)
    assert (table["a"].scales_from_zero, table["a"].cold_start_timeout) == ((True, 30.0) if held else (False, None))


def test_desired_table_lists_a_model_at_zero_and_keeps_failed_over_scaled_to_zero():
    table = build_desired_table({"a": imagemodel({"enabled": True}, desired=0)}, {}, {}, {})
    assert (table["a"].state, table["a"].cold_start_timeout, table["a"].backends) == ("scaled-to-zero", 600.0, ())
    failed = build_desired_table({"a": imagemodel({"enabled": True}, desired=0, degraded=True)}, {}, {}, {})
    assert failed["a"].state == "failed"


def ready_imagemodel():
    obj = imagemodel()
    obj["status"]["conditions"].append({"type": "Ready", "status": "True"})
    return obj


def test_a_ready_model_whose_pod_this_router_has_not_seen_waits_a_grace_without_asking_for_a_pod():
    desired = build_desired_table({MODEL: ready_imagemodel()}, {}, {}, {})
    assert (desired[MODEL].cold_start_timeout, desired[MODEL].scales_from_zero) == (DISCOVERY_GRACE_SECONDS, False)
    not_ready = build_desired_table({MODEL: imagemodel()}, {}, {}, {})
    assert not_ready[MODEL].cold_start_timeout is None  # not Ready: refused at once

    async def scenario():
        room, table, calls, metrics = build_room()
        table.sync({MODEL: ModelBackends(family="sdxl", cold_start_timeout=5.0)})
        waiter = asyncio.create_task(room.hold(MODEL, stays))
        await asyncio.sleep(0.3)
        assert room.waiting[MODEL] == 1 and calls == []  # waits, asks for nothing
        pod_ready(table)
        await asyncio.wait_for(waiter, 2)
        assert sample(metrics, "tinyimg_router_held_requests_total", model=MODEL, outcome="ready") == 1

        table.sync({MODEL: ModelBackends(family="sdxl", cold_start_timeout=0.3)})
        with pytest.raises(ApiError) as err:
            await room.hold(MODEL, stays)
        assert (err.value.status, err.value.code) == (503, "no_ready_backend") and err.value.retry_after
        assert "is Ready but no pod" in str(err.value) and calls == []

    asyncio.run(scenario())


async def gone() -> bool:
    return True


def test_clients_that_hang_up_at_once_ask_for_one_pod_per_cold_start():
    """Was: each request that hung up emptied the room, and the next wrote a new demand."""
    async def scenario():
        room, table, calls, _ = build_room(timeout=5.0)
        for _ in range(5):
            with pytest.raises(ApiError) as err:
                await room.hold(MODEL, gone)
            assert err.value.status == 499
        await asyncio.sleep(0.05)  # the demand call runs on its own task
        assert calls == [MODEL]
        pod_ready(table)
        await room.admit(MODEL, stays)  # a pod served: the cold start is over
        table.sync({MODEL: ModelBackends(family="sdxl", cold_start_timeout=5.0, scales_from_zero=True)})
        with pytest.raises(ApiError):
            await room.hold(MODEL, gone)
        await asyncio.sleep(0.05)
        assert calls == [MODEL, MODEL]  # a pod served in between: back at zero is a new cold start

    asyncio.run(scenario())


def test_one_client_holds_at_most_its_share_of_the_room():
    async def scenario():
        room, _, _, _ = build_room()
        mine = [asyncio.create_task(room.hold(MODEL, stays, "client-a")) for _ in range(room.per_client)]
        await asyncio.sleep(0.05)
        with pytest.raises(ApiError) as err:
            await room.hold(MODEL, stays, "client-a")
        assert (err.value.status, err.value.code) == (429, "too_many_waiting") and err.value.retry_after
        other = asyncio.create_task(room.hold(MODEL, stays, "client-b"))
        await asyncio.sleep(0.05)
        assert room.waiting[MODEL] == room.per_client + 1
        for task in [*mine, other]:
            task.cancel()
        await asyncio.gather(*mine, other, return_exceptions=True)
        assert room.waiting == {} and room.by_client == {}

    asyncio.run(scenario())


def test_an_invalid_request_for_a_model_at_zero_is_refused_and_wakes_nothing():
    async def scenario():
        room, _, calls, _ = build_room()

        def invalid() -> None:
            raise ApiError("width: must be a number", 422, "invalid_request")

        with pytest.raises(ApiError) as err:
            await room.admit(MODEL, stays, "client-a", invalid)
        assert err.value.status == 422 and calls == [] and room.waiting == {}

    asyncio.run(scenario())
