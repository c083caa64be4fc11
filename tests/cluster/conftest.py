"""The cluster tier: the chart, the operator, the router and model servers as real processes, run
by the process kubelet (tests/support/cluster) against the emulated API, driven by real helm and
kubectl exactly as the docs' deploy page (docs/getting-started/cluster.md) says.

One cluster per module (installing the chart and loading models takes seconds on 2 cores); the
tests of a module run in file order and each leaves the cluster as the next one expects.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.cluster import rbac
from tests.support.cluster.harness import Cluster, running_cluster
from tests.support.imagemodels import build_imagemodel
from tests.support.tiny_models import tiny_model_entry

NAMESPACE = "tinyimg"
RELEASE = "tinyimg"
IMAGEMODELS = "tinyimg.io/v1alpha1/imagemodels"
# The docs' commands (see test_the_docs_deploy_page_is_what_runs), with the image placeholders
# filled in: images are not pulled here, the kubelet maps them to this checkout's programs.
HELM_INSTALL = ["install", RELEASE, "charts/tinyimg", "-n", NAMESPACE, "--create-namespace",
                "--set", "serverImage.repository=REGISTRY/tinyimg-server",
                "--set", "operator.image.repository=REGISTRY/tinyimg-operator",
                "--set", "router.image.repository=REGISTRY/tinyimg-operator"]


def imagemodel_manifest(family: str, source: Path, name: str | None = None, **spec: Any) -> str:
    """An ImageModel for a tiny model directory, as a user would write it (YAML)."""
    entry = tiny_model_entry(family, source)
    entry.pop("name")
    entry.update(spec)
    return yaml.safe_dump(build_imagemodel(name or f"tiny-{family}", **entry))


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c.get("type") == kind), {})


def model_pods(cluster: Cluster, model: str, ready_only: bool = True) -> list[dict[str, Any]]:
    pods = cluster.list("v1/pods", NAMESPACE, labels={"tinyimg.io/model": model})
    pods = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    if ready_only:
        pods = [p for p in pods if condition(p, "Ready").get("status") == "True"]
    return pods


def served_count(pod: dict[str, Any], model: str) -> int:
    """What the pod's own /status says it served (its counter, read on its own address)."""
    status = httpx.get(f"http://{pod['status']['podIP']}:8000/status", timeout=10).json()
    return int(status["models"][model]["served"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running
        started = running.call(lambda: list(running.processes))
    leftover = [p.pid for p in started if p.poll() is None]
    assert not leftover, f"processes left running after the cluster stopped: {leftover}"


def install_chart(cluster: Cluster, *extra: str) -> Cluster:
    """The chart installed with real helm (``extra``: more helm arguments), the operator and
    router pods ready."""
    cluster.helm(*HELM_INSTALL, *extra)
    for component in ("operator", "router"):
        cluster.wait_until(
            lambda c=component: (d := cluster.get("apps/v1/deployments", NAMESPACE, f"{RELEASE}-{c}"))
            and (d.get("status") or {}).get("readyReplicas") == d["spec"]["replicas"],
            timeout=60, what=f"{component} ready",
        )
    return cluster


@pytest.fixture(scope="module")
def installed(cluster: Cluster) -> Cluster:
    """The chart installed with real helm, the operator and router pods ready."""
    return install_chart(cluster)


def account_grants_and_needs(cluster: Cluster, account: str) -> tuple[set[Any], list[Any]]:
    """What the chart's RBAC grants the service account ``account``, and what its recorded
    requests needed (tests.support.cluster.rbac)."""
    granted = rbac.grants(
        NAMESPACE, account, cluster.list("rbac.authorization.k8s.io/v1/roles"),
        cluster.list("rbac.authorization.k8s.io/v1/rolebindings"),
        cluster.list("rbac.authorization.k8s.io/v1/clusterroles"),
        cluster.list("rbac.authorization.k8s.io/v1/clusterrolebindings"),
    )
    user = f"system:serviceaccount:{NAMESPACE}:{account}"
    return granted, [need for r in cluster.requests() if r.user == user and (need := rbac.requested(r))]
