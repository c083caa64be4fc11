"""Every object the chart renders is a valid Kubernetes object and is locked down."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.chart.conftest import VALUE_SETS
from tests.chart.helm import NAMESPACE, RELEASE, containers, find, one, render

# Oldest Kubernetes the chart claims (Chart.yaml kubeVersion) and the newest schemas on hand.
KUBERNETES_VERSIONS = ("1.25", kubernetes_validate.utils.latest_version())
# Kinds kubernetes-validate has no schema for; each is validated by its own test instead.
VALIDATED_ELSEWHERE = {
    "ImageModel": "test_imagemodels.py: jsonschema against the generated CRD",
    "ServiceMonitor": "test_monitoring.py: schema of the Prometheus Operator fields the chart uses",
    "PodMonitor": "test_monitoring.py: schema of the Prometheus Operator fields the chart uses",
}


@pytest.mark.parametrize("values_set", VALUE_SETS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_passes_kubernetes_validate_strict(
    rendered: dict[str, list[dict[str, Any]]], values_set: str, version: str
) -> None:
    failures = []
    for obj in rendered[values_set]:
        if obj["kind"] in VALIDATED_ELSEWHERE:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {err.message} at {list(err.path)}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("values_set", VALUE_SETS)
def test_containers_run_non_root_read_only_with_no_privilege_and_capabilities(
    rendered: dict[str, list[dict[str, Any]]], values_set: str
) -> None:
    objects = rendered[values_set]
    for o in find(objects, "Deployment"):
        pod = o["spec"]["template"]["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, o["metadata"]["name"]
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    for name, c in containers(objects):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["capabilities"]["drop"] == ["ALL"], name
        assert "/tmp" in [m["mountPath"] for m in c["volumeMounts"]], f"{name}: read-only root needs a /tmp"


@pytest.mark.parametrize("values_set", VALUE_SETS)
def test_containers_set_cpu_and_memory_requests_and_limits(
    rendered: dict[str, list[dict[str, Any]]], values_set: str
) -> None:
    for name, c in containers(rendered[values_set]):
        assert set(c["resources"]["requests"]) >= {"cpu", "memory"}, name
        assert set(c["resources"]["limits"]) >= {"cpu", "memory"}, name


def test_default_install_has_operator_and_router_and_nothing_optional(defaults: list[dict[str, Any]]) -> None:
    kinds = sorted(o["kind"] for o in defaults)
    assert kinds == sorted([
        "CustomResourceDefinition", "ServiceAccount", "ServiceAccount", "ConfigMap", "ClusterRole",
        "ClusterRoleBinding", "Role", "Role", "RoleBinding", "RoleBinding", "Service", "Deployment", "Deployment",
        "NetworkPolicy",  # on by default: model pods are reachable only through the router (issue 11)
        "Secret",  # the router replicas' shared job-signing key
    ])


# Exactly what the operator calls (tinyimg_operator) plus what kopf itself needs.
OPERATOR_RULES = [
    (["tinyimg.io"], ["imagemodels"], ["get", "list", "watch", "patch"]),
    (["tinyimg.io"], ["imagemodels/status"], ["get", "patch"]),
    ([""], ["services", "persistentvolumeclaims"], ["get", "list", "watch", "create", "patch"]),
    # delete: a canary revision's ConfigMap and Deployment when its rollout ends (tinyimg_operator.rollout)
    ([""], ["configmaps"], ["get", "list", "watch", "create", "patch", "delete"]),
    (["apps"], ["deployments"], ["get", "list", "watch", "create", "patch", "delete"]),
    # cache.preload's loader Job: made, read for status.cache, replaced for a new weight revision
    (["batch"], ["jobs"], ["get", "create", "delete"]),
    ([""], ["pods"], ["list", "watch"]),  # Degraded from failing pods; the built-in autoscaler's load
    ([""], ["events"], ["create"]),
]
CRD_DISCOVERY_RULE = (["apiextensions.k8s.io"], ["customresourcedefinitions"], ["list", "watch"])
NAMESPACES_RULE = ([""], ["namespaces"], ["list", "watch"])


def rules_of(role: dict[str, Any]) -> list[tuple[list[str], list[str], list[str]]]:
    return [(r["apiGroups"], r["resources"], r["verbs"]) for r in role["rules"]]


def test_namespaced_operator_gets_a_role_and_only_crd_discovery_cluster_wide(defaults: list[dict[str, Any]]) -> None:
    role = one(defaults, "Role", "-operator")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert rules_of(role) == OPERATOR_RULES
    assert rules_of(one(defaults, "ClusterRole")) == [CRD_DISCOVERY_RULE]
    binding = one(defaults, "RoleBinding", "-operator")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    deployment = one(defaults, "Deployment", "-operator")
    assert binding["subjects"] == [{
        "kind": "ServiceAccount", "namespace": NAMESPACE,
        "name": deployment["spec"]["template"]["spec"]["serviceAccountName"],
    }]
    assert f"--namespace={NAMESPACE}" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


@pytest.mark.parametrize(
    ("values_set", "scope"),
    [("defaults", ["--namespace", NAMESPACE]), ("cluster-wide-operator", ["--all-namespaces"])],
)
def test_operator_arguments_are_ones_its_cli_turns_into_the_chosen_kopf_scope(
    rendered: dict[str, list[dict[str, Any]]], values_set: str, scope: list[str]
) -> None:
    from tinyimg_operator.cli import build_kopf_argv, build_parser

    c = one(rendered[values_set], "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    argv = build_kopf_argv(build_parser().parse_args([*c["command"][1:], *c["args"]]), {})
    assert argv[4:] == [*scope, "--liveness", "http://0.0.0.0:8080/healthz"]


def test_cluster_wide_operator_gets_a_clusterrole_with_namespaces_and_no_role(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["cluster-wide-operator"]
    assert rules_of(one(objects, "ClusterRole")) == [CRD_DISCOVERY_RULE, NAMESPACES_RULE, *OPERATOR_RULES]
    assert find(objects, "Role", "-operator") == []
    args = one(objects, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args and not any(a.startswith("--namespace") for a in args)


def test_operator_runs_its_entrypoint_with_one_replica_and_the_server_image(every_option: list[dict[str, Any]]) -> None:
    deployment = one(every_option, "Deployment", "-operator")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["tinyimg-operator", "run"]  # the image entrypoint: kopf --standalone
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["TINYIMG_SERVER_IMAGE"] == "registry.example.com/tinyimg-server:1.2.3"
    assert env["TINYIMG_IMAGE_PULL_POLICY"] == "IfNotPresent"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_image_tags_default_to_the_app_version(defaults: list[dict[str, Any]]) -> None:
    images = {c["image"] for _, c in containers(defaults)}
    assert images == {"ghcr.io/tinyimg/tinyimg-operator:0.1.0"}
    env = one(defaults, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "TINYIMG_SERVER_IMAGE", "value": "ghcr.io/tinyimg/tinyimg-server:0.1.0"} in env


def test_router_role_only_lists_and_watches_models_pods_and_their_owners(defaults: list[dict[str, Any]]) -> None:
    assert rules_of(one(defaults, "Role", "-router")) == [
        (["tinyimg.io"], ["imagemodels"], ["list", "watch", "patch"]),  # patch: scale from zero (builtin autoscaler)
        ([""], ["pods"], ["list", "watch"]),
        (["apps"], ["deployments", "replicasets"], ["list", "watch"]),
    ]
    router = one(defaults, "Deployment", "-router")["spec"]["template"]["spec"]
    assert router["serviceAccountName"] == one(defaults, "ServiceAccount", "-router")["metadata"]["name"]


def test_router_watches_its_namespace_and_serves_on_8000(defaults: list[dict[str, Any]]) -> None:
    c = one(defaults, "Deployment", "-router")["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["tinyimg", "router"]
    # The router may finish open requests within its grace period less the preStop sleep and the exit slack.
    grace = one(defaults, "Deployment", "-router")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert c["args"] == ["--kubernetes", "--namespace=$(POD_NAMESPACE)", "--host=0.0.0.0", "--port=8000",
                         "--job-secret-file=/etc/tinyimg/jobs/secret", "--autoscaler=builtin", f"--shutdown-timeout={grace - 15}"]
    assert grace - 15 == 330  # the default 300 s request timeout + 30 s upstream slack
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    service = one(defaults, "Service", "-router")
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/name": "tinyimg", "app.kubernetes.io/instance": RELEASE, "app.kubernetes.io/component": "router",
    }


def test_router_reads_api_keys_from_the_mounted_secret(every_option: list[dict[str, Any]]) -> None:
    pod = one(every_option, "Deployment", "-router")["spec"]["template"]["spec"]
    secret = one(every_option, "Secret", "-api-keys")
    assert base64.b64decode(secret["data"]["api-keys"]).decode() == "key-one\nkey-two\n"
    volume = next(v for v in pod["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    args = pod["containers"][0]["args"]
    assert "--api-keys-file=/etc/tinyimg/api-keys/api-keys" in args
    assert args[-2:] == ["--rate-limit=5", "--log-level=info"]


def test_router_uses_an_existing_api_key_secret_without_creating_one() -> None:
    objects = render(sets=("router.apiKeys.enabled=true", "router.apiKeys.existingSecret=my-keys"))
    assert [s["metadata"]["name"] for s in find(objects, "Secret")] == [f"{RELEASE}-tinyimg-router-jobs"]
    volumes = one(objects, "Deployment", "-router")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "api-keys", "secret": {"secretName": "my-keys", "items": [{"key": "api-keys", "path": "api-keys"}]}} in volumes


def test_ingress_routes_the_host_to_the_router_with_tls_and_class(every_option: list[dict[str, Any]]) -> None:
    spec = one(every_option, "Ingress")["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["images.example.com"], "secretName": "images-example-com-tls"}]
    rule = spec["rules"][0]
    assert rule["host"] == "images.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": one(every_option, "Service", "-router")["metadata"]["name"], "port": {"name": "http"}}


def test_network_policy_admits_only_router_and_operator_pods_and_the_prometheus_namespace(every_option: list[dict[str, Any]]) -> None:
    policy = one(every_option, "NetworkPolicy", "-model-servers")["spec"]
    assert policy["podSelector"] == {"matchLabels": {
        "app.kubernetes.io/name": "tinyimg", "app.kubernetes.io/component": "model-server",
    }}
    assert policy["policyTypes"] == ["Ingress"]
    [rule] = policy["ingress"]
    assert rule["ports"] == [{"port": 8000, "protocol": "TCP"}]
    router_pod_labels = one(every_option, "Deployment", "-router")["spec"]["template"]["metadata"]["labels"]
    operator_pod_labels = one(every_option, "Deployment", "-operator")["spec"]["template"]["metadata"]["labels"]
    [from_router, from_operator, from_prometheus] = rule["from"]  # the operator: its built-in autoscaler reads /status
    assert from_router["podSelector"]["matchLabels"].items() <= router_pod_labels.items()
    assert from_operator["podSelector"]["matchLabels"].items() <= operator_pod_labels.items()
    assert not from_router["podSelector"]["matchLabels"].items() <= operator_pod_labels.items()
    assert from_prometheus == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }


def test_network_policy_selects_the_pods_the_operator_builds(every_option: list[dict[str, Any]]) -> None:
    from tinyimg.core import labels

    selector = one(every_option, "NetworkPolicy", "-model-servers")["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= labels.model_server_labels("any-model").items()


def watched_resources() -> set[tuple[str, str]]:
    """(group, plural) of every kopf.on.* handler in the operator, read from its source."""
    import ast

    import tinyimg_operator.handlers
    from tinyimg.core import labels

    def value(node: ast.expr) -> str:
        if isinstance(node, ast.Constant):
            return node.value
        assert isinstance(node, ast.Attribute) and ast.unparse(node.value) == "labels", ast.unparse(node)
        return getattr(labels, node.attr)

    tree = ast.parse(Path(tinyimg_operator.handlers.__file__).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func).startswith("kopf.on.") and len(node.args) == 3:
            group, _version, plural = (value(a) for a in node.args)
            found.add((group, plural))
    return found


def test_operator_may_list_and_watch_every_resource_its_handlers_watch(defaults: list[dict[str, Any]]) -> None:
    watched = watched_resources()
    assert ("tinyimg.io", "imagemodels") in watched
    allowed = {
        (group, resource)
        for groups, resources, verbs in rules_of(one(defaults, "Role", "-operator"))
        if {"list", "watch"} <= set(verbs)
        for group in groups
        for resource in resources
    }
    assert watched <= allowed, f"watched without list/watch: {sorted(watched - allowed)}"
