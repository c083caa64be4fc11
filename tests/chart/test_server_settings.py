"""Every model-server setting is reachable from the chart (values `server`, `webhooks`) and from an
ImageModel (`spec.server`), and reaches the pod's config.yaml through the operator; the router's
body bound follows the same value."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.chart.helm import one, render
from tinyimg.spec import ModelSpec, PodServerSettings, ServerConfig
from tinyimg_operator.children import build_children
from tinyimg_operator.settings import load_build_settings

SCHEMA = Path(__file__).resolve().parents[2] / "charts" / "tinyimg" / "values.schema.json"
# What a pod's config may not take from the chart: the operator sets these, or the router does the job
# (adapter files go beside the model cache, on the pod's cache volume: HF_HOME).
# The C2PA signing files are the operator's too: it mounts the chart's provenance.c2paSecret.
POD_OWN = {"host", "port", "models", "api_keys_file", "router_secret_file", "adapter_cache_dir", "c2pa_cert_file",
           "c2pa_key_file"}


def test_every_server_config_field_is_a_chart_setting():
    """A new ServerConfig field fails here until PodServerSettings (and so values.server and
    spec.server, generated from it) carries it."""
    assert set(ServerConfig.model_fields) - POD_OWN == set(PodServerSettings.model_fields)
    wire = {f.alias or name for name, f in PodServerSettings.model_fields.items()}
    assert set(json.loads(SCHEMA.read_text())["properties"]["server"]["properties"]) == wire


def pod_config(objects: list[dict], spec: dict) -> ServerConfig:
    """What the operator, run with the chart's env for it, writes into a model pod's config."""
    container = one(objects, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    settings = load_build_settings(env)
    children = build_children(ModelSpec.model_validate({"name": "m", "family": "flux", "source": "/m", **spec}), "ns", settings)
    configmap = next(c for c in children if c["kind"] == "ConfigMap")
    deployment = next(c for c in children if c["kind"] == "Deployment")
    config = ServerConfig.model_validate(yaml.safe_load(configmap["data"]["config.yaml"]))
    return config, deployment["spec"]["template"]["spec"]


def test_server_values_reach_every_model_pod_and_a_model_overrides_them():
    objects = render(sets=("server.maxBodyBytes=33554432", "server.maxConnections=50", "server.trustedProxies={10.0.0.0/8}",
                           "server.jobs.webhookAllowedHosts={hooks.example.com}", "server.jobs.resultTtlSeconds=600"))
    config, pod = pod_config(objects, {})
    assert (config.max_body_bytes, config.max_connections, config.trusted_proxies) == (33554432, 50, ["10.0.0.0/8"])
    jobs = config.jobs_config()
    assert (jobs.webhook_allowed_hosts, jobs.result_ttl_seconds) == (["hooks.example.com"], 600)
    # The chart made a signing key Secret; the operator mounts it and points the config at it.
    secret = one(objects, "Secret", "-webhook")
    assert secret["data"]["secret"]
    volume = next(v for v in pod["volumes"] if v["name"] == "webhook-secret")
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "webhook-secret")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert jobs.webhook_secret_file == f"{mount['mountPath']}/secret"
    # A model's spec.server wins field by field, jobs merged.
    config, _ = pod_config(objects, {"server": {"maxBodyBytes": 67108864, "jobs": {"resultTtlSeconds": 60}}})
    assert (config.max_body_bytes, config.max_connections) == (67108864, 50)
    assert (config.jobs_config().result_ttl_seconds, config.jobs_config().webhook_allowed_hosts) == (60, ["hooks.example.com"])


def test_model_pods_mount_the_routers_job_secret_and_believe_signed_job_headers_only():
    objects = render()
    config, pod = pod_config(objects, {})
    router_secret = one(objects, "Secret", "-router-jobs")
    volume = next(v for v in pod["volumes"] if v["name"] == "router-secret")
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "router-secret")
    assert volume["secret"]["secretName"] == router_secret["metadata"]["name"]
    assert config.router_secret_file == f"{mount['mountPath']}/secret"
    router_args = one(objects, "Deployment", "-router")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--job-secret-file=/etc/tinyimg/jobs/secret" in router_args  # the same Secret, the same key


def test_no_server_values_leave_the_pod_at_the_server_defaults_with_no_webhooks():
    objects = render()
    config, pod = pod_config(objects, {})
    assert config.max_body_bytes == ServerConfig.model_fields["max_body_bytes"].default == 8 * 2**20
    assert config.jobs_config().webhook_allowed_hosts is None
    assert not [v for v in pod["volumes"] if v["name"] == "webhook-secret"]
    assert [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"].endswith("-webhook")] == []


def test_an_existing_webhook_secret_is_used_and_none_is_created():
    objects = render(sets=("webhooks.existingSecret=my-hooks", "server.jobs.webhookAllowedHosts={hooks.example.com}"))
    _config, pod = pod_config(objects, {})
    assert next(v for v in pod["volumes"] if v["name"] == "webhook-secret")["secret"]["secretName"] == "my-hooks"
    assert [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"].endswith("-webhook")] == []


def test_one_value_raises_the_body_bound_of_the_router_and_the_pods():
    objects = render(sets=("server.maxBodyBytes=33554432",))
    args = one(objects, "Deployment", "-router")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--max-body-bytes=33554432" in args
    assert pod_config(objects, {})[0].max_body_bytes == 33554432
    # router.maxBodyBytes overrides it for the router alone
    objects = render(sets=("server.maxBodyBytes=33554432", "router.maxBodyBytes=1048576"))
    assert "--max-body-bytes=1048576" in one(objects, "Deployment", "-router")["spec"]["template"]["spec"]["containers"][0]["args"]


def test_router_rate_limit_value_becomes_its_flags():
    objects = render(sets=("router.rateLimit.requestsPerSecond=3", "router.rateLimit.burst=20"))
    args = one(objects, "Deployment", "-router")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--rate-")] == ["--rate-limit=3", "--rate-burst=20"]
    assert not [a for a in one(render(), "Deployment", "-router")["spec"]["template"]["spec"]["containers"][0]["args"]
                if a.startswith("--rate-")]


def test_models_outside_the_operators_namespace_mount_no_secret_of_it():
    """A pod can mount only Secrets of its own namespace: with watchAllNamespaces, a model in
    another namespace gets neither the router's secret nor the webhook key (nor webhooks)."""
    objects = render(sets=("operator.watchAllNamespaces=true", "server.jobs.webhookAllowedHosts={hooks.example.com}"))
    container = one(objects, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    settings = load_build_settings({**env, "TINYIMG_NAMESPACE": "tinyimg"})
    spec = ModelSpec.model_validate({"name": "m", "family": "flux", "source": "/m"})
    for namespace, mounted in (("tinyimg", True), ("elsewhere", False)):
        children = build_children(spec, namespace, settings)
        pod = next(c for c in children if c["kind"] == "Deployment")["spec"]["template"]["spec"]
        config = ServerConfig.model_validate(yaml.safe_load(next(c for c in children if c["kind"] == "ConfigMap")["data"]["config.yaml"]))
        assert bool([v for v in pod["volumes"] if "secret" in v]) == mounted
        assert (config.router_secret_file is not None, config.jobs_config().webhook_allowed_hosts is not None) == (mounted, mounted)
