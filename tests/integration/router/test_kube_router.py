"""Kubernetes mode: the router watches ImageModels and pods in the emulated API
(tests/support/kube/) and its table follows; pods point at a real model server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from tests.support.imagemodels import build_imagemodel
from tests.support.kube import kube  # noqa: F401  (the fixture)
from tests.support.processes import free_port, start_servers
from tests.support.tiny_models import tiny_model_dirs  # noqa: F401  (the fixture)
from tinyimg.core import labels
from tinyimg.kube.connection import KubeConnection, load_kube_connection
from tinyimg.router.app import create_router_app
from tinyimg.router.discovery_kube import KubeDiscovery
from tinyimg.router.settings import RouterSettings

NS = "models"


@pytest.fixture(scope="module")
def flux_server(tiny_model_dirs, tmp_path_factory):
    proc = start_servers({"kube-flux": (("flux",), {})}, tiny_model_dirs, tmp_path_factory.mktemp("router-kube"))["kube-flux"]
    yield proc
    proc.stop()


@pytest.fixture
def kube_with_replicasets(kube):
    """The emulator declares no ReplicaSets by default; the router lists them (owner chain)."""
    kube.declare("apps/v1/replicasets", "ReplicaSet")
    return kube


@contextlib.asynccontextmanager
async def serving_router(kube_url: str, discovery: KubeDiscovery | None = None) -> AsyncIterator[str]:
    """The router app on real uvicorn, on this test's loop (the emulator lives on it too)."""
    port = free_port()
    app = create_router_app(RouterSettings(poll_interval=0.2), discovery or KubeDiscovery(KubeConnection(kube_url, NS)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def imagemodel(name: str, family: str = "flux") -> dict:
    return build_imagemodel(name, NS, family=family, source="org/repo")


def owner(obj: dict) -> list[dict]:
    meta = obj["metadata"]
    return [{"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"], "uid": meta["uid"], "controller": True}]


async def create_owner_chain(kube, model: str) -> dict:
    """What the operator and the Deployment controller make for an existing ImageModel: its
    Deployment (labelled as the operator's) and a ReplicaSet; returns the ReplicaSet, pods' owner."""
    im = kube.get("tinyimg.io/v1alpha1/imagemodels", NS, model)
    model_labels = {"tinyimg.io/model": model, "app.kubernetes.io/managed-by": "tinyimg-operator"}
    dep = await kube.create({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": model, "namespace": NS, "labels": model_labels, "ownerReferences": owner(im)},
        "spec": {"selector": {"matchLabels": {"tinyimg.io/model": model}}, "template": {}},
    })
    return await kube.create({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": f"{model}-7d9f", "namespace": NS, "labels": model_labels, "ownerReferences": owner(dep)},
        "spec": {"selector": {"matchLabels": {"tinyimg.io/model": model}}, "template": {}},
    })


def pod(name: str, model: str, port: int, ready: bool = False, ip: str = "127.0.0.1", owned_by: dict | None = None) -> dict:
    meta = {"name": name, "namespace": NS, "labels": {"tinyimg.io/model": model}}
    if owned_by is not None:
        meta["ownerReferences"] = owner(owned_by)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "server", "image": "x", "ports": [{"name": "http", "containerPort": port}]}]},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


async def models_view(client: httpx.AsyncClient) -> dict[str, dict]:
    return {m["name"]: m for m in (await client.get("/models")).json()["models"]}


async def eventually(check, timeout: float = 10.0):
    """Wait until ``check()`` (async) returns a truthy value, and return it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached in {timeout}s; last: {value!r}")
        await asyncio.sleep(0.05)


async def test_router_table_follows_imagemodels_and_pods(kube_with_replicasets, flux_server):
    kube = kube_with_replicasets
    server_port = int(flux_server.url.rsplit(":", 1)[1])
    async with serving_router(kube.url) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        ready = await eventually(lambda: _ready_body(client))
        assert ready == {"status": "ready", "mode": "kubernetes", "models": {}}

        await kube.create(imagemodel("tiny-flux"))
        replicaset = await create_owner_chain(kube, "tiny-flux")
        await kube.create(pod("stray", "not-a-model", server_port, ready=True))  # no ImageModel: ignored
        # Ready, labelled for the model, but not made by the operator's Deployment: never a backend.
        await kube.create(pod("impostor", "tiny-flux", server_port, ready=True))
        forged = {**replicaset, "metadata": {**replicaset["metadata"], "uid": "made-up"}}
        await kube.create(pod("forged-owner", "tiny-flux", server_port, ready=True, owned_by=forged))
        flux = await eventually(lambda: _model(client, "tiny-flux"))
        assert (flux["family"], flux["state"], flux["ready_replicas"], flux["replicas"]) == ("flux", "loading", 0, 0)
        assert "not-a-model" not in await models_view(client)
        no_pod = await client.post("/generate", json={"model": "tiny-flux", "prompt": "x"})
        assert no_pod.status_code == 503 and "retry-after" in no_pod.headers

        await kube.create(pod("tiny-flux-1", "tiny-flux", server_port, ready=False, owned_by=replicaset))
        flux = await eventually(lambda: _model(client, "tiny-flux", replicas=1))
        assert flux["ready_replicas"] == 0

        await kube.patch_status("v1/pods", NS, "tiny-flux-1", {"conditions": [{"type": "Ready", "status": "True"}]})
        flux = await eventually(lambda: _model(client, "tiny-flux", ready_replicas=1))
        assert (flux["state"], flux["backends"][0]["url"]) == ("ready", flux_server.url)
        generated = await client.post("/generate", json={"model": "tiny-flux", "prompt": "x"}, headers={"X-Request-ID": "k1"})
        assert generated.status_code == 200 and generated.headers["x-request-id"] == "k1"
        assert generated.json()["model"] == "tiny-flux"

        # A second pod that is ready in Kubernetes but answers nothing: listed, then dropped from
        # the rotation by the poller; the first pod keeps serving.
        await kube.create(pod("tiny-flux-2", "tiny-flux", free_port(), ready=True, owned_by=replicaset))
        flux = await eventually(lambda: _model(client, "tiny-flux", replicas=2))
        statuses = [(await client.post("/generate", json={"model": "tiny-flux", "prompt": "x"})).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]

        # Terminating pods leave the rotation; deleted pods leave the table.
        # (A finalizer holds the deleted pod in its terminating state, as the kubelet does.)
        await kube.patch("v1/pods", NS, "tiny-flux-1", {"metadata": {"finalizers": ["tests/hold"]}})
        await kube.delete("v1/pods", NS, "tiny-flux-1")
        terminating = kube.get("v1/pods", NS, "tiny-flux-1")
        assert terminating["metadata"]["deletionTimestamp"]
        flux = await eventually(lambda: _model(client, "tiny-flux", ready_replicas=0, replicas=2))
        await kube.patch("v1/pods", NS, "tiny-flux-1", {"metadata": {"finalizers": None}})
        await kube.delete("v1/pods", NS, "tiny-flux-2")
        flux = await eventually(lambda: _model(client, "tiny-flux", replicas=0))
        assert flux["state"] == "loading"

        await kube.patch_status(
            "tinyimg.io/v1alpha1/imagemodels", NS, "tiny-flux",
            {"conditions": [{"type": "Degraded", "status": "True", "reason": "CrashLoop", "message": "pod crashed"}]},
        )
        flux = await eventually(lambda: _model(client, "tiny-flux", state="failed"))
        assert flux["reason"] == "pod crashed"

        await kube.delete("tinyimg.io/v1alpha1/imagemodels", NS, "tiny-flux")
        await eventually(lambda: _gone(client, "tiny-flux"))
        assert (await client.post("/generate", json={"model": "tiny-flux", "prompt": "x"})).status_code == 404


async def test_router_watches_only_its_namespace_and_reads_a_kubeconfig(kube_with_replicasets, tmp_path):
    kube = kube_with_replicasets
    await kube.create({**imagemodel("elsewhere"), "metadata": {"name": "elsewhere", "namespace": "other"}})
    await kube.create(imagemodel("here"))
    async with serving_router(kube.url) as url, httpx.AsyncClient(base_url=url) as client:
        await eventually(lambda: _model(client, "here"))
        assert sorted(await models_view(client)) == ["here"]

    # The kubeconfig path (what `tinyimg router --kubernetes` uses outside a cluster).
    kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KUBECONFIG", str(kubeconfig))
        mp.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        connection = load_kube_connection()
    assert (connection.server, connection.namespace) == (kube.url, NS)
    assert connection.authorization == "Bearer test-token"


async def test_an_expired_token_is_read_again_from_the_kubeconfig(kube_with_replicasets, tmp_path, monkeypatch):
    """A 401 (the kubeconfig's token expired) makes the router read its credentials again, as
    `tinyimg router --kubernetes` does with the renewed kubeconfig, and its watches go on."""
    kube = kube_with_replicasets
    kubeconfig = tmp_path / "kubeconfig"
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kube.write_kubeconfig(kubeconfig, namespace=NS, user="router-first")
    first_token = load_kube_connection().bearer_token()
    discovery = KubeDiscovery(load_kube_connection(), reload=load_kube_connection)
    await kube.create(imagemodel("before"))
    async with serving_router(kube.url, discovery) as url, httpx.AsyncClient(base_url=url) as client:
        await eventually(lambda: _model(client, "before"))
        kube.emulator.revoke_token(first_token)
        kube.write_kubeconfig(kubeconfig, namespace=NS, user="router-renewed")
        # The router's one write (a cold start's demand) meets the 401 first: it logs in again and retries.
        await discovery.record_demand("before")
        annotations = kube.get("tinyimg.io/v1alpha1/imagemodels", NS, "before")["metadata"].get("annotations") or {}
        assert labels.DEMAND_ANNOTATION in annotations
        kube.emulator.end_watches()  # the watches list again; their client is the renewed one
        await kube.create(imagemodel("after"))
        await eventually(lambda: _model(client, "after"))
    users = [r.user for r in kube.requests() if r.resource == "imagemodels" and r.verb in ("list", "watch")]
    assert users[0] == "router-first" and users[-1] == "router-renewed", users


async def test_router_is_not_ready_while_the_api_is_unreachable():
    dead = f"http://127.0.0.1:{free_port()}"
    async with serving_router(dead) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/health/ready")
        assert response.status_code == 503
        # The same answer as a model server that is not ready: the error shape, with Retry-After.
        assert response.json()["error"]["code"] == "not_ready"
        assert response.headers["retry-after"] == "2"
        assert (await client.get("/health")).status_code == 200


async def _ready_body(client):
    r = await client.get("/health/ready")
    return r.json() if r.status_code == 200 else None


async def _model(client, name, **expected):
    item = (await models_view(client)).get(name)
    return item if item and all(item.get(k) == v for k, v in expected.items()) else None


async def _gone(client, name):
    return name not in await models_view(client)
