"""The CRD is generated from ModelSpec, structural, committed up to date, and it accepts the examples."""

import copy

import jsonschema
import pytest
import yaml

from tests.support.kube.crd import to_json_schema
from tinyimg.core.status import ImageModelStatus
from tinyimg_operator.autoscaling import AutoscalerState, Decision, build_autoscaling_status
from tinyimg_operator.cli import main
from tinyimg_operator.crd import build_crd
from tinyimg_operator.status import build_status

from .conftest import ROOT, load_example

CRD_FILE = ROOT / "crds" / "imagemodels.tinyimg.io.yaml"


def _version(crd: dict) -> dict:
    return crd["spec"]["versions"][0]


def _walk(node, path=""):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


@pytest.fixture(scope="module")
def validator():
    schema = to_json_schema(_version(build_crd())["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def test_committed_crd_matches_the_generator(capsys):
    assert main(["crd"]) == 0
    assert CRD_FILE.read_text() == capsys.readouterr().out, "run `make generate`"


def test_crd_schema_is_structural():
    schema = _version(build_crd())["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert not {"$ref", "anyOf", "oneOf", "title", "$defs", "const"} & set(node), path
        assert node.get("additionalProperties") is not False, path
    spec = schema["properties"]["spec"]
    assert "name" not in spec["properties"]
    assert set(spec["required"]) == {"family", "source"}
    assert spec["properties"]["family"]["enum"] == ["sdxl", "flux"]
    assert spec["properties"]["revision"] == {"type": "string", "nullable": True, "description": "A Hub branch, tag or commit; unset: main."}
    limits = spec["properties"]["limits"]["properties"]["maxWidth"]
    assert (limits["minimum"], limits["maximum"], limits["default"]) == (16, 8192, 2048)
    assert spec["properties"]["runtime"]["properties"]["requestTimeoutSeconds"]["exclusiveMinimum"] is True


def test_every_typed_property_has_a_type():
    spec = _version(build_crd())["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for path, node in _walk(spec):
        if path.endswith(".properties") or path == "":
            continue
        if isinstance(node, dict) and ("properties" in node or "enum" in node or "minimum" in node):
            assert "type" in node, path


def test_crd_has_subresources_printer_columns_and_names():
    crd = build_crd()
    v = _version(crd)
    assert crd["metadata"]["name"] == "imagemodels.tinyimg.io"
    assert crd["spec"]["names"]["shortNames"] == ["imgm"]
    assert v["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert v["subresources"]["status"] == {}
    assert [c["name"] for c in v["additionalPrinterColumns"]] == ["Family", "Ready", "Replicas", "Desired", "Age", "Load", "Scaling", "Revisions"]


@pytest.mark.parametrize("name", ["sdxl", "flux"])
def test_examples_validate_against_the_crd(validator, name):
    validator.validate(load_example(name))


def _broken(change):
    doc = load_example("sdxl")
    change(doc["spec"])
    return doc


BROKEN = {
    "missing-source": lambda s: s.pop("source"),
    "unknown-family": lambda s: s.update(family="dalle"),
    "negative-gpus": lambda s: s["resources"].update(gpus=-1),
    "width-over-max": lambda s: s["limits"].update(maxWidth=9000),
    "bad-quantity": lambda s: s["resources"].update(memory="lots"),
    "zero-timeout": lambda s: s["runtime"].update(requestTimeoutSeconds=0),
}


@pytest.mark.parametrize("change", BROKEN.values(), ids=BROKEN.keys())
def test_broken_imagemodels_are_rejected_by_the_crd(validator, change):
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(_broken(change))


def test_committed_crd_parses_as_yaml_with_one_document():
    docs = [d for d in yaml.safe_load_all(CRD_FILE.read_text()) if d]
    assert docs == [copy.deepcopy(build_crd())]


def test_the_status_schema_is_generated_from_imagemodelstatus_and_holds_what_the_operator_writes():
    status_schema = _version(build_crd())["schema"]["openAPIV3Schema"]["properties"]["status"]
    fields = {f.alias or name for name, f in ImageModelStatus.model_fields.items()}
    assert set(status_schema["properties"]) == fields == {
        "replicas", "readyReplicas", "desiredReplicas", "observedGeneration", "selector", "url", "conditions", "autoscaling",
        "revisions", "rollout", "pods", "acceleration", "cache",
    }
    written = build_status("m", "ns", 3, 1, None, None, "2026-12-04T00:00:00Z")
    written["autoscaling"] = build_autoscaling_status(
        Decision(replicas=2, previous=1, load=3.0, reason="ScaledUp", message="load 3", state=AutoscalerState(replicas=2)),
        None, 1_780_000_000.0,
    )
    jsonschema.Draft7Validator(to_json_schema(status_schema)).validate(written)
    read = ImageModelStatus.parse(written)
    assert (read.desired_replicas, read.condition("Ready").reason, read.autoscaling.history[0].from_) == (1, "ReplicasNotReady", 1)
