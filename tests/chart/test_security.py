"""What the chart trusts (issue 11): model pods reachable only through the router, no key material
in pod annotations, the operator's image allow-list, ingress timeouts that fit long generations."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from tests.chart.helm import VALUES_ALL, find, one, render

KEYS = ("key-one", "key-two")  # tests/chart/values-all.yaml


def test_network_policy_is_on_by_default_and_guards_the_model_pods(defaults: list[dict[str, Any]]) -> None:
    policy = one(defaults, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "model-server"
    [rule] = policy["ingress"]
    [from_router, from_operator, from_prometheus] = rule["from"]
    assert from_router["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "router"
    # The built-in autoscaler (the default controller) reads each model pod's /status from the operator pod.
    assert from_operator["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    for controller in ("hpa", "keda", "none"):
        [rule] = one(render(sets=(f"autoscaling.controller={controller}",)), "NetworkPolicy")["spec"]["ingress"]
        assert [p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in rule["from"] if "podSelector" in p
                and "namespaceSelector" not in p] == ["router"], controller
    assert from_prometheus["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert find(render(sets=("networkPolicy.enabled=false",)), "NetworkPolicy") == []


def key_digests() -> set[str]:
    """Every hash of the keys a careless template could write: each key, and the file's content."""
    texts = [*KEYS, "\n".join(KEYS), "\n".join(KEYS) + "\n"]
    return {hashlib.new(algo, t.encode()).hexdigest() for t in texts for algo in ("sha256", "sha1", "md5")}


def test_router_pod_annotations_reveal_nothing_about_the_keys(every_option: list[dict[str, Any]]) -> None:
    deployment = one(every_option, "Deployment", "-router")
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    secret = one(every_option, "Secret", "-api-keys")
    revision = annotations["tinyimg.io/api-keys-revision"]
    # The pods roll with the Secret: they carry the Secret's own revision.
    assert revision == secret["metadata"]["annotations"]["tinyimg.io/api-keys-revision"]
    for value in [*annotations.values(), *deployment["metadata"].get("annotations", {}).values()]:
        assert value not in key_digests() and not any(k in value for k in KEYS), value
    # Not derived from the keys at all: with no live Secret to keep it from, each render draws anew.
    again = one(render((VALUES_ALL,)), "Deployment", "-router")["spec"]["template"]["metadata"]["annotations"]
    assert again["tinyimg.io/api-keys-revision"] != revision
    assert base64.b64decode(secret["data"]["api-keys"]).decode() == "key-one\nkey-two\n"


def test_existing_key_secret_puts_no_revision_on_the_router() -> None:
    objects = render(sets=("router.apiKeys.enabled=true", "router.apiKeys.existingSecret=my-keys"))
    annotations = one(objects, "Deployment", "-router")["spec"]["template"]["metadata"].get("annotations") or {}
    assert "tinyimg.io/api-keys-revision" not in annotations


def operator_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    c = one(objects, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in c["env"] if "value" in e}


def test_operator_allows_only_the_server_image_by_default(defaults: list[dict[str, Any]]) -> None:
    from tinyimg_operator.settings import load_build_settings

    settings = load_build_settings(operator_env(defaults))
    assert "TINYIMG_ALLOWED_IMAGES" not in operator_env(defaults)
    assert settings.image_allowed(settings.server_image)
    assert not settings.image_allowed("docker.io/library/busybox:latest")


def test_operator_gets_the_allow_list_from_values(every_option: list[dict[str, Any]]) -> None:
    from tinyimg_operator.settings import load_build_settings

    settings = load_build_settings(operator_env(every_option))
    assert settings.allowed_images == ("registry.example.com/tinyimg-server-cuda13:1.2.3", "registry.example.com/custom/*")
    assert settings.image_allowed("registry.example.com/custom/server:9")
    assert not settings.image_allowed("registry.example.com/other/server:9")


TIMEOUT_KEYS = (
    "nginx.ingress.kubernetes.io/proxy-read-timeout",
    "nginx.ingress.kubernetes.io/proxy-send-timeout",
    "haproxy.org/timeout-server",
    "haproxy-ingress.github.io/timeout-server",
    "projectcontour.io/response-timeout",
    "alb.ingress.kubernetes.io/load-balancer-attributes",
)
INGRESS_SLACK_SECONDS = 30  # the ingress outwaits the router, whose own 504 is a JSON answer


def ingress_annotations(*sets: str, values: tuple = ()) -> dict[str, str]:
    return one(render(values, ("router.ingress.enabled=true", *sets)), "Ingress")["metadata"].get("annotations") or {}


def expected_timeout(request_timeout: float) -> int:
    import math

    from tinyimg.core.drain import build_upstream_timeout

    return math.ceil(build_upstream_timeout(request_timeout)) + INGRESS_SLACK_SECONDS


@pytest.mark.parametrize("sets,request_timeout", [
    ((), 300),  # no models in values: the schema's default request timeout
    (("models[0].name=m", "models[0].family=sdxl", "models[0].source=o/m",
      "models[0].runtime.requestTimeoutSeconds=1800"), 1800),
], ids=["schema-default", "longest-model-timeout"])
def test_ingress_timeouts_outwait_the_router(sets: tuple[str, ...], request_timeout: float) -> None:
    annotations = ingress_annotations(*sets)
    seconds = expected_timeout(request_timeout)
    assert {k: annotations[k] for k in TIMEOUT_KEYS} == {
        "nginx.ingress.kubernetes.io/proxy-read-timeout": str(seconds),
        "nginx.ingress.kubernetes.io/proxy-send-timeout": str(seconds),
        "haproxy.org/timeout-server": f"{seconds}s",
        "haproxy-ingress.github.io/timeout-server": f"{seconds}s",
        "projectcontour.io/response-timeout": f"{seconds}s",
        "alb.ingress.kubernetes.io/load-balancer-attributes": f"idle_timeout.timeout_seconds={seconds}",
    }


def test_ingress_timeout_is_the_longest_of_the_chart_models_and_yours_win(every_option: list[dict[str, Any]]) -> None:
    annotations = one(every_option, "Ingress")["metadata"]["annotations"]
    assert annotations["haproxy.org/timeout-server"] == f"{expected_timeout(599.5)}s"  # sdxl-base's 599.5 s
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "300"  # set in values: kept


def test_ingress_timeout_can_be_set_or_switched_off() -> None:
    assert ingress_annotations("router.ingress.timeoutSeconds=7200")["haproxy.org/timeout-server"] == "7200s"
    assert not set(TIMEOUT_KEYS) & set(ingress_annotations("router.ingress.timeoutAnnotations=false"))


@pytest.mark.parametrize("sets,request_timeout", [
    ((), 300),
    (("models[0].name=m", "models[0].family=sdxl", "models[0].source=o/m",
      "models[0].runtime.requestTimeoutSeconds=1800"), 1800),
], ids=["schema-default", "longest-model-timeout"])
def test_router_grace_period_covers_the_longest_proxied_request(sets: tuple[str, ...], request_timeout: float) -> None:
    """The same derivation as a model pod's (tinyimg.core.drain), over the router's upstream timeout."""
    from tinyimg.core.drain import build_drain_timing, build_upstream_timeout

    pod = one(render(sets=sets), "Deployment", "-router")["spec"]["template"]["spec"]
    timing = build_drain_timing([build_upstream_timeout(request_timeout)])
    assert pod["terminationGracePeriodSeconds"] == timing.grace_seconds
    assert pod["containers"][0]["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", str(timing.prestop_seconds)]}}}


def test_router_grace_period_can_be_set() -> None:
    pod = one(render(sets=("router.terminationGracePeriodSeconds=42",)), "Deployment", "-router")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 42


def test_router_replicas_share_one_job_signing_secret() -> None:
    """Every router replica signs job ids with the same key (a mounted Secret), so a job created
    through one replica resolves through any other; the key is random and at least 16 bytes."""
    objects = render(sets=("router.replicas=2",))
    secret = one(objects, "Secret", "-router-jobs")
    key = base64.b64decode(secret["data"]["secret"])
    assert len(key) >= 16
    pod = one(objects, "Deployment", "-router")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "--job-secret-file=/etc/tinyimg/jobs/secret" in container["args"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "job-secret")
    assert (mount["mountPath"], mount["readOnly"]) == ("/etc/tinyimg/jobs", True)
    volume = next(v for v in pod["volumes"] if v["name"] == "job-secret")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert base64.b64decode(one(render(), "Secret", "-router-jobs")["data"]["secret"]) != key  # drawn, not fixed
