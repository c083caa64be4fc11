"""Golden manifests per example (regenerate: `make generate`) and Kubernetes-schema validity."""

import kubernetes_validate
import pytest
import yaml

from tinyimg_operator.children import build_children
from tinyimg_operator.crd import build_crd
from tinyimg_operator.imagemodel import read_model_spec
from tinyimg_operator.settings import BuildSettings

from .conftest import EXAMPLES, load_example

GOLDEN = EXAMPLES["sdxl"].parents[2] / "tests" / "unit" / "operator" / "golden"
K8S_VERSION = "1.30"


def built(name: str, owner: dict | None = None) -> list[dict]:
    doc = load_example(name)
    return build_children(read_model_spec(doc), doc["metadata"]["namespace"], BuildSettings(), owner=owner or doc)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_manifests_match_the_golden_file(name):
    golden = [d for d in yaml.safe_load_all((GOLDEN / f"{name}.yaml").read_text()) if d]
    assert built(name) == golden, "run `make generate` and review the diff"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_built_object_passes_strict_kubernetes_validation(name):
    owner = {"metadata": {"name": name, "uid": "0d4c1a2e-0000-4000-8000-000000000000"}}
    for obj in built(name, owner):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_crd_passes_strict_kubernetes_validation():
    kubernetes_validate.validate(build_crd(), K8S_VERSION, strict=True)


def test_strict_validation_catches_a_misspelt_field():
    obj = built("sdxl")[-1]
    obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
