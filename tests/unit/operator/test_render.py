"""`tinyimg-operator render`: config.yaml -> ImageModels that round-trip to the same ModelSpecs."""

import yaml

from tinyimg.spec import load_config, parse_config
from tinyimg_operator.cli import main
from tinyimg_operator.imagemodel import read_model_spec

from .conftest import ROOT


def test_render_round_trips_config_yaml_to_equal_model_specs(capsys):
    assert main(["render", str(ROOT / "config.yaml"), "--namespace", "gpu"]) == 0
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    config = parse_config(yaml.safe_load((ROOT / "config.yaml").read_text()))
    assert [d["metadata"]["name"] for d in docs] == ["sdxl-base", "flux-schnell"]
    assert all(d["metadata"]["namespace"] == "gpu" and d["kind"] == "ImageModel" for d in docs)
    assert [read_model_spec(d) for d in docs] == config.models


def test_render_keeps_only_what_the_config_sets(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("models:\n  - name: tiny\n    family: flux\n    source: ./models/tiny\n")
    assert main(["render", str(path)]) == 0
    (doc,) = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert doc["spec"] == {"family": "flux", "source": "./models/tiny"}
    assert "namespace" not in doc["metadata"]
    assert read_model_spec(doc) == load_config(path).models[0].model_copy(update={"source": "./models/tiny"})


def test_render_reports_an_invalid_config_and_fails(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("models:\n  - name: x\n    family: dalle\n    source: a/b\n")
    assert main(["render", str(path)]) == 2
    assert "models.0.family" in capsys.readouterr().err


def test_manifests_command_prints_the_children(capsys):
    assert main(["manifests", str(ROOT / "crds" / "examples" / "flux.yaml"), "-n", "x"]) == 0
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert [(d["kind"], d["metadata"]["namespace"]) for d in docs] == [
        ("ConfigMap", "x"), ("Service", "x"), ("Deployment", "x")]


def test_manifests_command_refuses_an_image_the_operator_would_refuse(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TINYIMG_SERVER_IMAGE", "srv:1")
    monkeypatch.delenv("TINYIMG_ALLOWED_IMAGES", raising=False)
    doc = yaml.safe_load((ROOT / "crds" / "examples" / "flux.yaml").read_text())
    doc["spec"]["image"] = "elsewhere/img:1"
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["manifests", str(path)]) == 2
    assert "spec.image" in capsys.readouterr().err
    monkeypatch.setenv("TINYIMG_ALLOWED_IMAGES", "elsewhere/*")
    assert main(["manifests", str(path)]) == 0
