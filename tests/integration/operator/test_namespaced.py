"""The operator as the chart and the image run it by default: watching one namespace only."""

import asyncio

import pytest

from .conftest import DEPLOYMENTS, NAMESPACE, SERVER_IMAGE, imagemodel, start_operator


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
    await asyncio.sleep(0.5)  # the other namespace's model was created first: it had its chance
    assert kube.get(DEPLOYMENTS, "other-team", "elsewhere") is None
    assert not (kube.get("tinyimg.io/v1alpha1/imagemodels", "other-team", "elsewhere").get("status") or {})
