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
# The chart's oldest Kubernetes and the newest schemas on hand: the built objects are valid on each.
K8S_VERSIONS = ("1.25", K8S_VERSION, kubernetes_validate.utils.latest_version())


def built(name: str, owner: dict | None = None) -> list[dict]:
    doc = load_example(name)
    return build_children(read_model_spec(doc), doc["metadata"]["namespace"], BuildSettings(), owner=owner or doc)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_manifests_match_the_golden_file(name):
    golden = [d for d in yaml.safe_load_all((GOLDEN / f"{name}.yaml").read_text()) if d]
    assert built(name) == golden, "run `make generate` and review the diff"


# The sdxl example asks for a cache PVC; the flux one uses an emptyDir.
EXPECTED_KINDS = {
    "sdxl": ["ConfigMap", "PersistentVolumeClaim", "Service", "Deployment"],
    "flux": ["ConfigMap", "Service", "Deployment"],
}


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_built_object_passes_strict_kubernetes_validation(name, version):
    owner = {"metadata": {"name": name, "uid": "0d4c1a2e-0000-4000-8000-000000000000"}}
    objects = built(name, owner)
    assert [o["kind"] for o in objects] == EXPECTED_KINDS[name]
    for obj in objects:
        # validate() raises on any schema violation; it returns the schema version it used.
        assert kubernetes_validate.validate(obj, version, strict=True) in (version, version.rsplit(".", 1)[0])


def test_crd_passes_strict_kubernetes_validation():
    crd = build_crd()
    assert crd["kind"] == "CustomResourceDefinition" and crd["metadata"]["name"] == "imagemodels.tinyimg.io"
    assert kubernetes_validate.validate(crd, K8S_VERSION, strict=True) == K8S_VERSION


def test_strict_validation_catches_a_misspelt_field():
    obj = built("sdxl")[-1]
    obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
