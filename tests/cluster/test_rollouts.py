"""Revisions in the cluster: the chart installed with real helm, one tiny Flux model with one pod,
requests through the router Service. A change of `source` with a canary: 10 % of 400 requests go
to the new revision during the first step (each answer says its revision), then all of them, then
the model's own pod rolls to it and the canary goes. A canary pointed at a missing source gets no
request and is rolled back (`RolledBack` with the reason) while the running revision serves.
`strategy: surge` on the one-pod model: a new source under a request loop, no answer but 200."""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml

from tests.cluster.conftest import (
    IMAGEMODELS,
    NAMESPACE,
    RELEASE,
    condition,
    imagemodel_manifest,
    install_chart,
    model_pods,
)
from tests.support.tiny_models import tiny_model_dirs  # noqa: F401  (the fixture)

MODEL = "tiny-flux"
BODY = {"model": MODEL, "prompt": "a lighthouse", "width": 64, "height": 48, "steps": 1}
RUNTIME = {"device": "cpu", "cpuFallback": True, "maxBatchSize": 1, "queueSize": 256}
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def rollout(cluster, tiny_model_dirs, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("rollouts")
    # Copies of the tiny model under other paths: another source, so another revision.
    sources = {name: workdir / name for name in ("v2", "v3")}
    for path in sources.values():
        shutil.copytree(tiny_model_dirs["flux"], path)
    install_chart(cluster, "--set", "operator.extraEnv.TINYIMG_ROLLOUT_INTERVAL_SECONDS=0.5")
    manifest = workdir / "model.yaml"
    manifest.write_text(imagemodel_manifest("flux", tiny_model_dirs["flux"], MODEL, replicas=1, runtime=RUNTIME,
                                            # Two pods on two busy cores: their milliseconds per step vary more
                                            # than a GPU's; the latency rule is tested in tests/unit/operator.
                                            rollout={"canary": {"steps": [10, 100], "intervalSeconds": 45,
                                                                "maxLatencyRatio": 20}}))
    cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(manifest))
    cluster.wait_until(lambda: len(model_pods(cluster, MODEL)) == 1, timeout=180, what="the model pod ready")
    url = cluster.service_url(NAMESPACE, f"{RELEASE}-router")
    cluster.wait_until(lambda: httpx.get(f"{url}/health/ready", timeout=5).json().get("models", {}).get(MODEL, {})
                       .get("ready_replicas") == 1, timeout=60, what="the router sees the pod")
    return cluster, url, sources, tiny_model_dirs["flux"]


def revisions(cluster) -> list[dict]:
    return (cluster.get(IMAGEMODELS, NAMESPACE, MODEL).get("status") or {}).get("revisions") or []


def revision_of(cluster, source) -> str:
    """The revision the operator made of ``source`` (its status.revisions)."""
    return cluster.wait_until(lambda: next((r["name"] for r in revisions(cluster) if r.get("source") == str(source)), None),
                              timeout=60, interval=0.2, what=f"a revision of {source}")


def generate(url: str) -> tuple[int, str | None]:
    answer = httpx.post(f"{url}/generate", json=BODY, timeout=60)
    return answer.status_code, answer.headers.get("x-tinyimg-revision")


def patch(cluster, spec: dict) -> None:
    cluster.kubectl("-n", NAMESPACE, "patch", "imagemodel", MODEL, "--type=merge", "-p", yaml.safe_dump({"spec": spec}))


def test_a_canary_takes_its_share_then_everything_then_is_promoted(rollout):
    cluster, url, sources, first = rollout
    old = revision_of(cluster, first)
    assert generate(url) == (200, old)
    patch(cluster, {"source": str(sources["v2"])})
    new = revision_of(cluster, sources["v2"])
    step = cluster.wait_until(
        lambda: next((r for r in revisions(cluster) if r["name"] == new and r.get("stepStarted")), None),
        timeout=180, interval=0.2, what="the canary's first step begins (its pod Ready)")
    assert step["phase"] == "canary" and step["weight"] == 10
    # The router learns the weights from the ImageModel's status, the canary pod from its watch.
    cluster.wait_until(lambda: sum(generate(url)[1] == new for _ in range(20)) >= 1, timeout=30, interval=0.2,
                       what="the router sends the canary requests")
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: generate(url), range(400)))
    assert next(r for r in revisions(cluster) if r["name"] == new)["step"] == 0, "the step ended during the 400"
    assert {status for status, _ in answers} == {200}
    counts = Counter(revision for _, revision in answers)
    share = counts[new] / 400
    print(f"\ncanary step 1: {counts[new]} of 400 requests to the new revision ({share:.1%}), {counts[old]} to the old")
    assert set(counts) == {old, new} and 0.06 <= share <= 0.14, counts
    model = cluster.get(IMAGEMODELS, NAMESPACE, MODEL)
    assert condition(model, "Progressing")["reason"] == "Canary"
    assert model["status"]["rollout"] == f"{old} 90% stable, {new} 10% canary"
    assert condition(model, "Ready")["status"] == "True"

    seen: list[dict] = []

    def second_step() -> bool:
        seen[:] = revisions(cluster)
        return next(r for r in seen if r["name"] == new)["weight"] == 100
    try:
        cluster.wait_until(second_step, timeout=120, interval=0.5, what="the second step: 100%")
    except AssertionError as err:
        raise AssertionError(f"revisions: {seen}") from err
    time.sleep(1.0)  # the router's watch of the ImageModel
    assert {generate(url) for _ in range(40)} == {(200, new)}
    cluster.wait_until(lambda: [(r["name"], r["phase"], r["weight"]) for r in revisions(cluster)][:2]
                       == [(new, "stable", 100), (old, "superseded", 0)],
                       timeout=180, interval=0.5, what="promoted: the model's pod runs the new revision")
    cluster.wait_until(lambda: cluster.get("apps/v1/deployments", NAMESPACE, f"{MODEL}-canary") is None,
                       timeout=60, what="the canary Deployment is gone")
    pods = model_pods(cluster, MODEL)
    assert [p["metadata"]["labels"]["tinyimg.io/revision"] for p in pods] == [new]
    assert {generate(url) for _ in range(10)} == {(200, new)}
    status = cluster.get(IMAGEMODELS, NAMESPACE, MODEL)["status"]
    cluster.wait_until(lambda: [(p["revision"], p["ready"]) for p in
                                (cluster.get(IMAGEMODELS, NAMESPACE, MODEL)["status"].get("pods") or [])] == [(new, True)],
                       timeout=30, what="status.pods names the pod's revision")
    assert status["revisions"][0]["source"] == str(sources["v2"])


def test_a_canary_at_a_missing_source_gets_nothing_and_is_rolled_back(rollout):
    cluster, url, sources, _ = rollout
    running = revision_of(cluster, sources["v2"])
    missing = sources["v3"].parent / "does-not-exist"
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            answers.append(generate(url))

    loop = threading.Thread(target=load)
    loop.start()
    try:
        patch(cluster, {"source": str(missing)})
        back = cluster.wait_until(
            lambda: next((r for r in revisions(cluster) if r["phase"] == "rolled-back"), None),
            timeout=180, interval=0.5, what="the canary is rolled back")
    finally:
        stop.set()
        loop.join(60)
    assert back["source"] == str(missing) and back["weight"] == 0
    assert "the model failed to load" in back["message"] and "does-not-exist" in back["message"], back
    model = cluster.get(IMAGEMODELS, NAMESPACE, MODEL)
    progressing = condition(model, "Progressing")
    assert progressing["reason"] == "RolledBack" and progressing["status"] == "False", progressing
    assert f"revision {running} serves" in progressing["message"]
    assert condition(model, "Ready")["status"] == "True"
    assert answers and set(answers) == {(200, running)}, Counter(answers)
    cluster.wait_until(lambda: cluster.get("apps/v1/deployments", NAMESPACE, f"{MODEL}-canary") is None,
                       timeout=60, what="the failed canary's Deployment is gone")
    events = cluster.list("v1/events", NAMESPACE)
    assert "RolledBack" in {e.get("reason") for e in events}, [e.get("reason") for e in events]


def test_surge_replaces_the_one_pod_with_no_failed_request(rollout):
    cluster, url, sources, _ = rollout
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            answers.append(generate(url))

    loop = threading.Thread(target=load)
    loop.start()
    try:
        # No canary: the new weights roll the model's Deployment, the new pod first (surge).
        cluster.kubectl("-n", NAMESPACE, "patch", "imagemodel", MODEL, "--type=json", "-p",
                        '[{"op": "replace", "path": "/spec/rollout", "value": {"strategy": "surge"}},'
                        f' {{"op": "replace", "path": "/spec/source", "value": "{sources["v3"]}"}}]')
        target = revision_of(cluster, sources["v3"])
        deployment = cluster.wait_until(lambda: cluster.get("apps/v1/deployments", NAMESPACE, MODEL), timeout=30)
        cluster.wait_until(lambda: cluster.get("apps/v1/deployments", NAMESPACE, MODEL)["spec"]["strategy"]
                           ["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}, timeout=30, what="surge strategy")
        cluster.wait_until(lambda: [p["metadata"]["labels"]["tinyimg.io/revision"] for p in model_pods(cluster, MODEL)]
                           == [target] and len(model_pods(cluster, MODEL, ready_only=False)) == 1,
                           timeout=180, interval=0.2, what="the one pod replaced by the new revision's")
        time.sleep(2.0)  # requests after the switch
    finally:
        stop.set()
        loop.join(60)
    assert deployment is not None
    statuses = Counter(status for status, _ in answers)
    print(f"\nsurge: {len(answers)} requests through the switch: {dict(statuses)}; revisions {Counter(r for _, r in answers)}")
    assert statuses == Counter({200: len(answers)}), statuses
    assert (200, target) in answers
