from tinyimg.router.aggregate import build_health_view, build_model_state, build_models_view, build_status_view
from tinyimg.router.table import BackendRef, BackendTable, ModelBackends
from tinyimg.wire.contract import AccelerationInfo, ModelInfoResponse, RouterSelfStatus, StatusResponse


def table_with(**models: list[str]) -> BackendTable:
    table = BackendTable()
    table.sync({m: ModelBackends(backends=tuple(BackendRef(u, u) for u in urls)) for m, urls in models.items()})
    return table


def test_sync_keeps_learned_load_of_pods_that_stay_and_drops_the_rest():
    table = table_with(a=["http://h:1", "http://h:2"])
    table.pods["http://h:1"].inflight = 3
    table.sync({"a": ModelBackends(family="sdxl", backends=(BackendRef("http://h:1", "p1", ready=False),))})
    assert list(table.pods) == ["http://h:1"]
    pod = table.pods["http://h:1"]
    assert (pod.inflight, pod.name, pod.ready) == (3, "p1", False)
    table.sync({})
    assert table.models == {} and table.pods == {}


def test_a_pod_serves_a_model_only_when_ready_reachable_and_loaded():
    table = table_with(a=["http://h:1"], b=["http://h:1"])
    pod = table.pods["http://h:1"]
    pod.model_states = {"a": "ready", "b": "loading"}
    assert [p.url for p in table.ready_pods("a")] == ["http://h:1"]
    assert table.ready_pods("b") == []
    pod.reachable = False
    assert table.ready_pods("a") == []


def test_models_view_lists_a_model_with_no_reachable_backend():
    table = table_with(a=["http://h:1", "http://h:2"], b=[])
    table.pods["http://h:1"].queue_depth = {"a": 2}
    table.pods["http://h:2"].reachable = False
    table.pods["http://h:2"].last_error = "refused"
    view = {m["name"]: m for m in build_models_view(table).model_dump()["models"]}
    assert (view["a"]["state"], view["a"]["ready_replicas"], view["a"]["replicas"]) == ("ready", 1, 2)
    assert view["a"]["backends"][0]["queue_depth"] == 2
    assert (view["b"]["state"], view["b"]["reason"], view["b"]["ready_replicas"]) == ("unavailable", "no backend known", 0)
    table.pods["http://h:1"].reachable = False
    assert build_model_state(table.models["a"], table.pods_of("a")) == ("unavailable", "refused")


def test_model_state_prefers_loading_then_discovery_state():
    table = table_with(a=["http://h:1"])
    table.pods["http://h:1"].model_states = {"a": "loading"}
    assert build_model_state(table.models["a"], table.pods_of("a"))[0] == "loading"
    table.pods["http://h:1"].model_states = {"a": "failed"}
    assert build_model_state(table.models["a"], table.pods_of("a"))[0] == "failed"
    table.models["a"].state, table.models["a"].reason = "failed", "image pull"
    assert build_model_state(table.models["a"], table.pods_of("a")) == ("failed", "image pull")


def test_health_view_says_not_ready_until_discovery_has_synced():
    table = table_with(a=["http://h:1"])
    table.synced = False
    assert build_health_view(table, "kubernetes").status == "not_ready"
    table.synced = True
    assert build_health_view(table, "static").model_dump(exclude_none=True) == {
        "status": "ready", "mode": "static", "models": {"a": {"state": "ready", "ready_replicas": 1, "replicas": 1}}
    }


def test_status_view_sums_reachable_pods_and_lists_unreachable_ones():
    table = table_with(a=["http://h:1", "http://h:2", "http://h:3"])
    def status(**counts):
        return StatusResponse(uptime_seconds=1, devices=[], models={"a": counts})

    results = {
        "http://h:1": status(queue_depth=2, in_flight=1, served=10, failed=1),
        "http://h:2": status(queue_depth=1, in_flight=1, served=5, failed=0),
        "http://h:3": "ConnectError: refused",
    }
    own = RouterSelfStatus(mode="static", uptime_seconds=1.0, in_flight=0)
    view = build_status_view(table, results, own).model_dump(exclude_none=True)
    assert view["totals"] == {
        "queue_depth": 3, "in_flight": 2, "served": 15, "failed": 1, "pods": 3, "reachable_pods": 2, "unreachable_pods": 1
    }
    assert view["pods"][2] == {
        "name": "http://h:3", "url": "http://h:3", "models": ["a"], "in_flight_from_router": 0,
        "reachable": False, "error": "ConnectError: refused",
    }


def test_models_view_passes_on_what_a_backends_warm_up_measured():
    table = table_with(a=["http://h:1"])
    backend = ModelInfoResponse(name="a", family="flux", source="/models/a", state="ready",
                                acceleration=AccelerationInfo(seconds_per_image=0.71, quality=41.5))
    [item] = build_models_view(table, {"a": backend}).model_dump()["models"]
    assert item["acceleration"] == {"seconds_per_image": 0.71, "quality": 41.5}
    assert item["source"] is None  # a backend's local concern, never passed on
