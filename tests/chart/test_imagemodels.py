"""ImageModels from `models:` values, and the chart's copy of the generated CRD."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.chart.helm import CHART, NAMESPACE, ROOT, find, render

CRD = ROOT / "crds" / "imagemodels.tinyimg.io.yaml"
CHART_CRD = CHART / "crds" / "imagemodels.tinyimg.io.yaml"


def read_crd(path: Path) -> dict[str, Any]:
    if not path.is_file():
        pytest.fail(f"{path.relative_to(ROOT)} is missing: run `make generate` (it copies the CRD into the chart)")
    return yaml.safe_load(path.read_text())


def validate_imagemodel(obj: dict[str, Any]) -> None:
    """jsonschema against the CRD's openAPIV3Schema. Kubernetes' OpenAPI v3 keeps draft 4's
    boolean exclusiveMinimum/Maximum, so draft 4 it is."""
    [version] = read_crd(CRD)["spec"]["versions"]
    jsonschema.Draft4Validator(version["schema"]["openAPIV3Schema"]).validate(obj)


def test_chart_crd_is_an_exact_copy_of_the_generated_crd() -> None:
    read_crd(CRD), read_crd(CHART_CRD)
    assert CHART_CRD.read_bytes() == CRD.read_bytes(), "charts/tinyimg/crds/ drifted from crds/: run `make generate`"


def test_values_schema_models_match_the_generated_crd() -> None:
    import json

    from tinyimg_operator.values_schema import build_model_item_schema

    shipped = json.loads((CHART / "values.schema.json").read_text())["properties"]["models"]["items"]
    assert shipped == build_model_item_schema(read_crd(CRD)), "values.schema.json drifted from the CRD: run `make generate`"


def test_values_schema_command_keeps_the_shipped_file_when_nothing_changed(capsys) -> None:
    """`make generate` runs this; on an up-to-date tree it reproduces the shipped file byte for byte."""
    from tinyimg_operator.cli import main

    path = CHART / "values.schema.json"
    assert main(["values-schema", str(path)]) == 0
    assert capsys.readouterr().out == path.read_text()


def test_default_values_create_no_imagemodels(defaults: list[dict[str, Any]]) -> None:
    assert find(defaults, "ImageModel") == []


def test_imagemodels_from_values_validate_against_the_crd_schema(every_option: list[dict[str, Any]]) -> None:
    models = find(every_option, "ImageModel")
    assert [m["metadata"]["name"] for m in models] == ["sdxl-base", "tiny-cpu"]
    for model in models:
        validate_imagemodel(model)
        assert model["metadata"]["namespace"] == NAMESPACE
        assert model["metadata"]["labels"]["tinyimg.io/model"] == model["metadata"]["name"]


def test_imagemodels_from_values_are_accepted_by_the_operator(every_option: list[dict[str, Any]]) -> None:
    from tinyimg_operator.imagemodel import read_model_spec

    specs = [read_model_spec(m) for m in find(every_option, "ImageModel")]
    assert [(s.name, s.resources.gpus, s.cache.size) for s in specs] == [("sdxl-base", 1, "30Gi"), ("tiny-cpu", 0, None)]


def test_config_yaml_models_render_to_the_imagemodels_the_operator_builds(tmp_path: Path) -> None:
    """The chart's `models:` takes config.yaml entries as they are, and renders what
    `tinyimg-operator render config.yaml` would."""
    from tinyimg.spec import load_config
    from tinyimg_operator.imagemodel import build_imagemodel

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    values = tmp_path / "models.yaml"
    values.write_text(yaml.safe_dump({"models": config["models"]}))
    rendered = {m["metadata"]["name"]: m for m in find(render((values,)), "ImageModel")}
    expected = {s.name: build_imagemodel(s) for s in load_config(ROOT / "config.yaml").models}
    assert rendered.keys() == expected.keys() == {m["name"] for m in config["models"]}
    for name, model in rendered.items():
        validate_imagemodel(model)
        assert model["spec"] == expected[name]["spec"], name


def test_crd_validation_rejects_a_wrongly_typed_field() -> None:
    model = {"apiVersion": "tinyimg.io/v1alpha1", "kind": "ImageModel", "metadata": {"name": "m"},
             "spec": {"family": "sdxl", "source": "a/b", "replicas": "two"}}
    with pytest.raises(jsonschema.ValidationError, match="'two' is not of type 'integer'"):
        validate_imagemodel(model)


def test_e2e_imagemodel_is_valid_and_uses_the_model_baked_into_the_cpu_image() -> None:
    from tinyimg_operator.imagemodel import read_model_spec

    model = yaml.safe_load((ROOT / "tests" / "e2e" / "imagemodel.yaml").read_text())
    validate_imagemodel(model)
    spec = read_model_spec(model)
    assert (spec.runtime.device, spec.resources.gpus) == ("cpu", 0)
    assert spec.source == f"/models/tiny-{spec.family}"
    assert '"/models/tiny-$family"' in (ROOT / "Dockerfile.server").read_text()
