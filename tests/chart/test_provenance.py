"""values `provenance.c2paSecret`: the operator is told the TLS Secret, mounts it into the pods of
every model (tls.crt, tls.key at /etc/tinyimg/c2pa) and points their config at it; a model asking
for C2PA without it is refused with a reason; models in other namespaces get no Secret."""

from __future__ import annotations

import pytest
import yaml

from tests.chart.helm import one, render
from tinyimg.spec import ModelSpec, ServerConfig
from tinyimg_operator.children import build_children
from tinyimg_operator.imagemodel import InvalidSpecError, check_policy
from tinyimg_operator.settings import load_build_settings


def operator_env(objects: list[dict]) -> dict[str, str]:
    container = one(objects, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def model(**provenance) -> ModelSpec:
    return ModelSpec.model_validate({"name": "m", "family": "flux", "source": "/m", "provenance": provenance})


def test_the_signing_secret_reaches_each_model_pod_and_its_config():
    env = operator_env(render(sets=("provenance.c2paSecret=image-signing",)))
    settings = load_build_settings(env)  # TINYIMG_NAMESPACE comes from the downward API: unset here
    assert env["TINYIMG_C2PA_SECRET"] == "image-signing"
    children = build_children(model(c2pa=True), "default", settings)
    pod = next(c for c in children if c["kind"] == "Deployment")["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "c2pa-key"]
    assert volume["secret"] == {"secretName": "image-signing", "items": [{"key": "tls.crt", "path": "tls.crt"},
                                                                        {"key": "tls.key", "path": "tls.key"}]}
    assert {"name": "c2pa-key", "mountPath": "/etc/tinyimg/c2pa", "readOnly": True} in pod["containers"][0]["volumeMounts"]
    configmap = next(c for c in children if c["kind"] == "ConfigMap")
    config = ServerConfig.model_validate(yaml.safe_load(configmap["data"]["config.yaml"]))
    assert (config.c2pa_cert_file, config.c2pa_key_file) == ("/etc/tinyimg/c2pa/tls.crt", "/etc/tinyimg/c2pa/tls.key")
    check_policy(model(c2pa=True), settings)  # allowed


def test_without_the_secret_a_model_asking_for_c2pa_is_refused_and_others_are_untouched():
    env = operator_env(render())
    assert "TINYIMG_C2PA_SECRET" not in env
    settings = load_build_settings(env)
    with pytest.raises(InvalidSpecError) as refused:
        check_policy(model(c2pa=True), settings)
    assert refused.value.reason == "SigningKeyMissing" and refused.value.field == "spec.provenance.c2pa"
    check_policy(model(watermark=True, parameters=True), settings)
    pod = next(c for c in build_children(model(), "default", settings) if c["kind"] == "Deployment")
    assert not [v for v in pod["spec"]["template"]["spec"]["volumes"] if v["name"] == "c2pa-key"]


def test_models_in_another_namespace_get_no_signing_secret():
    settings = load_build_settings({"TINYIMG_C2PA_SECRET": "image-signing", "TINYIMG_NAMESPACE": "tinyimg"})
    assert settings.for_namespace("tinyimg").c2pa_secret == "image-signing"
    assert settings.for_namespace("elsewhere").c2pa_secret is None
