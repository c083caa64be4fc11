"""A real kopf operator (tinyimg_operator.handlers) in the test's event loop, against the emulator."""

from __future__ import annotations

import logging

import pytest

from tests.support.imagemodels import build_imagemodel
from tests.support.kube import KopfOperator, kube  # noqa: F401  (kube is a fixture)

NAMESPACE = "models"
IMAGEMODELS = "tinyimg.io/v1alpha1/imagemodels"
DEPLOYMENTS = "apps/v1/deployments"
SERVER_IMAGE = "test.local/tinyimg-server:test"


async def start_operator(kube, tmp_path, monkeypatch, namespaces: tuple[str, ...] = ()) -> KopfOperator:
    """The operator, logged in through a kubeconfig that points at the emulator (kopf's login path)."""
    monkeypatch.setenv("KUBECONFIG", str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
    monkeypatch.setenv("TINYIMG_SERVER_IMAGE", SERVER_IMAGE)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    logging.getLogger("kopf").setLevel(logging.INFO)
    running = KopfOperator("tinyimg_operator.handlers", namespaces)
    await running.start()
    return running


@pytest.fixture()
async def operator(kube, tmp_path, monkeypatch):
    """Cluster-wide (``--all-namespaces``)."""
    running = await start_operator(kube, tmp_path, monkeypatch)
    yield running
    await running.stop()


def imagemodel(name: str, **spec) -> dict:
    return build_imagemodel(name, NAMESPACE, **{"resources": {"gpus": 1}, **spec})
