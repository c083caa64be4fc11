"""Pure builders: what the Deployment, Service, ConfigMap and PVC of one model look like."""

import pytest
import yaml

from tinyimg.core import labels
from tinyimg.core.drain import build_drain_timing
from tinyimg.spec import ModelSpec, ServerConfig
from tinyimg_operator.children import build_children
from tinyimg_operator.configmap import build_configmap
from tinyimg_operator.deployment import build_deployment
from tinyimg_operator.imagemodel import InvalidSpecError, check_policy, read_model_spec
from tinyimg_operator.objects import CHECKSUM_ANNOTATION
from tinyimg_operator.service import build_service
from tinyimg_operator.settings import BuildSettings, load_build_settings
from tinyimg_operator.storage import build_cache_claim

OWNER = {"metadata": {"name": "m", "uid": "1234"}}


def spec(**fields) -> ModelSpec:
    return ModelSpec.model_validate({"name": "m", "family": "sdxl", "source": "org/m", **fields})


def container(dep: dict) -> dict:
    return dep["spec"]["template"]["spec"]["containers"][0]


def test_build_deployment_requests_gpu_count_and_never_surges():
    dep = build_deployment(spec(resources={"gpus": 2}), "ns", BuildSettings())
    assert container(dep)["resources"]["limits"] == {"memory": "16Gi", "nvidia.com/gpu": "2"}
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


def test_build_deployment_without_gpus_has_no_gpu_limit_and_surges_one():
    dep = build_deployment(spec(resources={"gpus": 0}, runtime={"device": "cpu"}), "ns", BuildSettings())
    assert "nvidia.com/gpu" not in container(dep)["resources"].get("limits", {})
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_build_deployment_runs_the_server_with_the_mounted_config():
    c = container(build_deployment(spec(), "ns", BuildSettings(server_image="img:1", image_pull_policy="Always")))
    assert c["command"] == ["tinyimg", "serve", "--config", "/etc/tinyimg/config.yaml", "--termination-log", "/dev/termination-log"]
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert (c["image"], c["imagePullPolicy"]) == ("img:1", "Always")
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert {"name": "config", "mountPath": "/etc/tinyimg", "readOnly": True} in c["volumeMounts"]


def test_per_model_image_overrides_the_operator_default():
    assert container(build_deployment(spec(image="mine:2"), "ns", BuildSettings()))["image"] == "mine:2"


@pytest.mark.parametrize("timeout", [10, 95, 1800, 2705])
def test_startup_probe_covers_the_startup_timeout(timeout):
    probe = container(build_deployment(spec(startupTimeoutSeconds=timeout), "ns", BuildSettings()))["startupProbe"]
    assert probe["failureThreshold"] * probe["periodSeconds"] >= timeout
    assert (probe["failureThreshold"] - 1) * probe["periodSeconds"] < timeout


def test_probes_use_the_server_health_endpoints():
    c = container(build_deployment(spec(), "ns", BuildSettings()))
    assert c["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}


def test_pod_is_non_root_read_only_and_drops_capabilities():
    pod = build_deployment(spec(), "ns", BuildSettings())["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    sc = pod["containers"][0]["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                  "capabilities": {"drop": ["ALL"]}}
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    assert {"name": "tmp", "mountPath": "/tmp"} in pod["containers"][0]["volumeMounts"]


def test_cache_is_a_claim_when_sized_else_an_empty_dir():
    sized = spec(cache={"size": "30Gi", "storageClassName": "fast"})
    pod = build_deployment(sized, "ns", BuildSettings())["spec"]["template"]["spec"]
    assert {"name": "cache", "persistentVolumeClaim": {"claimName": "m-cache"}} in pod["volumes"]
    claim = build_cache_claim(sized, "ns", OWNER)
    assert claim["spec"]["resources"]["requests"]["storage"] == "30Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    assert build_cache_claim(spec(), "ns") is None
    plain = build_deployment(spec(), "ns", BuildSettings())["spec"]["template"]["spec"]
    assert {"name": "cache", "emptyDir": {}} in plain["volumes"]


def test_env_has_hf_home_token_secret_and_user_values():
    model = spec(hfTokenSecret={"name": "hf"}, env={"A": "1", "HF_HOME": "/x"})
    c = container(build_deployment(model, "ns", BuildSettings()))
    assert c["env"] == [
        {"name": "HF_HOME", "value": "/x"},
        # torch.compile's caches on the cache volume: a second pod reuses the compiled kernels.
        {"name": "TORCHINDUCTOR_CACHE_DIR", "value": "/var/cache/huggingface/torchinductor"},
        {"name": "TRITON_CACHE_DIR", "value": "/var/cache/huggingface/triton"},
        {"name": "HOME", "value": "/tmp"},  # the writable tmp volume: the root filesystem is read-only
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},  # its name in the shared queue
        {"name": "TINYIMG_REVISION", "value": model.weight_revision()},  # answers carry it
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
        {"name": "A", "value": "1"},
    ]
    assert {"name": "cache", "mountPath": "/var/cache/huggingface"} in c["volumeMounts"]


def test_shared_jobs_settings_reach_the_pod_and_stay_in_the_secrets_namespace():
    settings = BuildSettings(redis_secret="redis", s3_secret="s3", results_claim="results", secrets_namespace="ns")
    deployment = build_deployment(spec(), "ns", settings)
    pod, c = deployment["spec"]["template"]["spec"], container(deployment)
    assert {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "redis", "key": "password"}}} in c["env"]
    assert c["envFrom"] == [{"secretRef": {"name": "s3"}}]
    assert {"name": "results", "persistentVolumeClaim": {"claimName": "results"}} in pod["volumes"]
    assert {"name": "results", "mountPath": "/var/lib/tinyimg/results"} in c["volumeMounts"]
    elsewhere = container(build_deployment(spec(), "other", settings.for_namespace("other")))
    assert "envFrom" not in elsewhere and "REDIS_PASSWORD" not in {e["name"] for e in elsewhere["env"]}


def test_placement_fields_reach_the_pod():
    s = spec(nodeSelector={"gpu": "a100"}, tolerations=[{"key": "g", "operator": "Exists", "effect": "NoSchedule"}],
             resources={"gpus": 1, "cpu": "4", "memory": "24Gi", "memoryLimit": "32Gi"})
    pod = build_deployment(s, "ns", BuildSettings())["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["tolerations"] == [{"key": "g", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "4", "memory": "24Gi"},
        "limits": {"memory": "32Gi", "nvidia.com/gpu": "1"},
    }


def test_pod_template_has_scrape_annotations_and_config_checksum():
    ann = build_deployment(spec(), "ns", BuildSettings())["spec"]["template"]["metadata"]["annotations"]
    assert (ann["prometheus.io/scrape"], ann["prometheus.io/port"], ann["prometheus.io/path"]) == ("true", "8000", "/metrics")
    def checksum(**fields) -> str:
        return build_deployment(spec(**fields), "ns", BuildSettings())["spec"]["template"]["metadata"]["annotations"][CHECKSUM_ANNOTATION]
    # A change of weights or placement rolls the pods...
    for fields in ({"source": "org/other"}, {"dtype": "float16"}, {"runtime": {"offload": "model"}}):
        assert checksum(**fields) != ann[CHECKSUM_ANNOTATION], fields
    # ...live settings do not: the pods read the mounted config again and apply them.
    for fields in ({"limits": {"maxSteps": 50}}, {"defaults": {"steps": 9}}, {"runtime": {"maxBatchSize": 2, "queueSize": 7}},
                   {"adapters": [{"name": "ink", "source": "org/ink-lora"}]}):
        assert checksum(**fields) == ann[CHECKSUM_ANNOTATION], fields


def test_every_child_has_the_model_labels_and_the_owner():
    for obj in build_children(spec(cache={"size": "1Gi"}), "ns", BuildSettings(), owner=OWNER):
        assert obj["metadata"]["labels"] == {
            labels.NAME: "tinyimg", labels.COMPONENT: "model-server", labels.MODEL: "m",
            labels.MANAGED_BY: "tinyimg-operator",
        }, obj["kind"]
        ref = obj["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == ("ImageModel", "m", "1234", True)
        assert obj["metadata"]["namespace"] == "ns"
    assert [o["kind"] for o in build_children(spec(), "ns", BuildSettings())] == ["ConfigMap", "Service", "Deployment"]


def test_service_selects_the_model_pods_on_port_8000():
    svc = build_service(spec(), "ns")
    assert svc["spec"]["selector"] == labels.model_server_labels("m")
    assert svc["spec"]["ports"][0]["port"] == 8000 and svc["spec"]["ports"][0]["targetPort"] == "http"
    dep = build_deployment(spec(), "ns", BuildSettings())
    assert dep["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]


def test_configmap_holds_a_server_config_with_this_one_model():
    s = spec(limits={"maxSteps": 50})
    config = ServerConfig.model_validate(yaml.safe_load(build_configmap(s, "ns")["data"]["config.yaml"]))
    assert (config.host, config.port) == ("0.0.0.0", 8000)
    assert config.models == [s]


def test_read_model_spec_names_the_bad_field():
    body = {"metadata": {"name": "m"}, "spec": {"family": "sdxl", "source": "x", "limits": {"maxWidth": 99999}}}
    with pytest.raises(InvalidSpecError) as err:
        read_model_spec(body)
    assert err.value.field == "spec.limits.maxWidth"


def test_build_settings_come_from_the_environment():
    assert load_build_settings({"TINYIMG_SERVER_IMAGE": "x:1"}) == BuildSettings("x:1", None)
    assert load_build_settings({"TINYIMG_ALLOWED_IMAGES": " a:1, reg.io/org/* ,"}).allowed_images == ("a:1", "reg.io/org/*")
    assert load_build_settings({}).server_image.startswith("ghcr.io/tinyimg/tinyimg-server:")
    with pytest.raises(ValueError, match="TINYIMG_IMAGE_PULL_POLICY"):
        load_build_settings({"TINYIMG_IMAGE_PULL_POLICY": "Sometimes"})


@pytest.mark.parametrize("timeout", [1, 300, 86_400])
def test_grace_period_comes_from_the_drain_timing_and_the_server_waits_itself(timeout):
    pod = build_deployment(spec(runtime={"requestTimeoutSeconds": timeout}), "ns", BuildSettings())["spec"]["template"]["spec"]
    timing = build_drain_timing([timeout])
    assert pod["terminationGracePeriodSeconds"] == timing.grace_seconds
    assert pod["terminationGracePeriodSeconds"] >= timing.prestop_seconds + timeout
    # No preStop hook: the server keeps accepting for prestop_seconds after SIGTERM by itself (with
    # readiness already 503), so a hook's sleep would add to that wait, past the grace period's slack.
    assert "lifecycle" not in pod["containers"][0]


def test_model_pods_get_no_service_account_token():
    pod = build_deployment(spec(), "ns", BuildSettings())["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False


MEMORY_LIMITS = {
    "limit-defaults-to-the-request": ({"memory": "24Gi"}, "24Gi"),
    "explicit-limit-wins": ({"memory": "24Gi", "memoryLimit": "32Gi"}, "32Gi"),
    "no-memory-no-limit": ({"memory": None}, None),
}


@pytest.mark.parametrize("resources,limit", MEMORY_LIMITS.values(), ids=MEMORY_LIMITS.keys())
def test_memory_limit_comes_from_the_spec(resources, limit):
    res = container(build_deployment(spec(resources={"gpus": 1, **resources}), "ns", BuildSettings()))["resources"]
    assert res["limits"].get("memory") == limit


def test_env_goes_to_the_pod_only_never_into_the_configmap():
    s = spec(env={"API_TOKEN": "s3cr3t-value"})
    assert "s3cr3t-value" not in yaml.safe_dump(build_configmap(s, "ns"))
    assert {"name": "API_TOKEN", "value": "s3cr3t-value"} in container(build_deployment(s, "ns", BuildSettings()))["env"]


IMAGES = {
    "no-override": (None, (), True),
    "the-server-image": ("srv:1", (), True),
    "other-image-refused-by-default": ("evil:1", (), False),
    "exact-entry": ("mine:2", ("mine:2",), True),
    "prefix-entry": ("reg.io/org/srv:3", ("reg.io/org/*",), True),
    "prefix-does-not-match-elsewhere": ("reg.io/other/srv:3", ("reg.io/org/*",), False),
}


@pytest.mark.parametrize("image,allowed,ok", IMAGES.values(), ids=IMAGES.keys())
def test_image_allow_list(image, allowed, ok):
    settings = BuildSettings(server_image="srv:1", allowed_images=allowed)
    s = spec(image=image) if image else spec()
    if ok:
        check_policy(s, settings)
        return
    with pytest.raises(InvalidSpecError) as err:
        check_policy(s, settings)
    assert (err.value.field, err.value.reason) == ("spec.image", "ImageNotAllowed")
    assert image in err.value.message


CACHE_MODES = {
    "rwo-one-replica": ({"size": "1Gi"}, 1, "ReadWriteOnce"),
    "rwx-many-replicas": ({"size": "1Gi", "accessMode": "ReadWriteMany"}, 3, "ReadWriteMany"),
    "empty-dir-many-replicas": ({}, 3, None),
}


@pytest.mark.parametrize("cache,replicas,mode", CACHE_MODES.values(), ids=CACHE_MODES.keys())
def test_cache_claim_access_mode(cache, replicas, mode):
    claim = build_cache_claim(spec(cache=cache, replicas=replicas), "ns")
    assert (claim["spec"]["accessModes"] if claim else None) == ([mode] if mode else None)


def test_read_write_once_cache_with_several_replicas_is_refused():
    body = {"metadata": {"name": "m"}, "spec": {"family": "sdxl", "source": "x", "replicas": 2, "cache": {"size": "1Gi"}}}
    with pytest.raises(InvalidSpecError) as err:
        read_model_spec(body)
    assert "cache.accessMode" in err.value.message and "ReadWriteMany" in err.value.message


@pytest.mark.parametrize(("autoscaling", "refused"), [
    ({"enabled": True, "maxReplicas": 3}, True), ({"enabled": True, "maxReplicas": 1}, False), ({"enabled": False, "maxReplicas": 3}, False),
], ids=["autoscaler-may-add-pods", "autoscaler-bounded-at-one", "autoscaling-off"])
def test_read_write_once_cache_is_refused_when_the_autoscaler_may_run_several_pods(autoscaling, refused):
    """One replica now, but the autoscaler would scale into Multi-Attach errors."""
    body = {"metadata": {"name": "m"}, "spec": {"family": "sdxl", "source": "x", "replicas": 1, "cache": {"size": "1Gi"},
                                                "autoscaling": autoscaling}}
    if not refused:
        assert read_model_spec(body).cache.size == "1Gi"
        return
    with pytest.raises(InvalidSpecError) as err:
        read_model_spec(body)
    assert "autoscaling.maxReplicas" in err.value.message and "ReadWriteMany" in err.value.message


def test_read_write_once_cache_never_surges_even_without_gpus():
    s = spec(resources={"gpus": 0}, runtime={"device": "cpu"}, cache={"size": "1Gi"})
    assert build_deployment(s, "ns", BuildSettings())["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
