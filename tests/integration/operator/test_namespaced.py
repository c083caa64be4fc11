"""The operator as the chart and the image run it by default: watching one namespace only."""

import pytest

from tests.support.kube import HELPER_AGENT

from .conftest import DEPLOYMENTS, IMAGEMODELS, NAMESPACE, SERVER_IMAGE, imagemodel, start_operator

# Everything the operator lists and watches (tinyimg_operator.handlers).
WATCHED = {"imagemodels", "deployments", "configmaps", "services", "persistentvolumeclaims"}


@pytest.fixture()
async def namespaced_operator(kube, tmp_path, monkeypatch):
    """``--namespace models``: the chart's and the image's default."""
    running = await start_operator(kube, tmp_path, monkeypatch, namespaces=(NAMESPACE,))
    yield running
    await running.stop()


async def test_namespaced_operator_reconciles_its_namespace_and_leaves_others_alone(kube, namespaced_operator):
    outside = imagemodel("elsewhere")
    outside["metadata"]["namespace"] = "other-team"
    await kube.create(outside)
    await kube.create(imagemodel("mine"))
    dep = await kube.wait_for(lambda: kube.get(DEPLOYMENTS, NAMESPACE, "mine"))
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == SERVER_IMAGE
    # Sync: "mine" is handled to the end (status written), and it was created after "elsewhere".
    await kube.wait_for(lambda: (kube.get(IMAGEMODELS, NAMESPACE, "mine").get("status") or {}).get("conditions"))
    # Why nothing happened to "elsewhere": the operator never even asked for it. Every request
    # it made is scoped to its own namespace (a cluster-wide watch would have delivered it).
    paths = {r.path for r in kube.requests() if r.user_agent != HELPER_AGENT}
    scoped = {p for p in paths if f"/namespaces/{NAMESPACE}/" in p}
    assert any(p.endswith(f"/namespaces/{NAMESPACE}/imagemodels") for p in scoped)  # it did watch its own
    assert not [p for p in paths - scoped if p.rsplit("/", 1)[-1] in WATCHED], sorted(paths - scoped)
    assert kube.get(DEPLOYMENTS, "other-team", "elsewhere") is None
    assert not (kube.get(IMAGEMODELS, "other-team", "elsewhere").get("status") or {})
