"""The one schema: ModelSpec / ServerConfig validation, wire names, config files."""

from pathlib import Path

import pytest
import yaml

from tinyimg.spec import ConfigError, ModelSpec, ServerConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parents[3]


def minimal(**overrides):
    return {"name": "m", "family": "sdxl", "source": "org/repo", **overrides}


def test_config_yaml_lists_the_real_sdxl_and_flux_models():
    config = load_config(ROOT / "config.yaml")
    sources = {m.name: m.source for m in config.models}
    assert sources == {
        "sdxl-base": "stabilityai/stable-diffusion-xl-base-1.0",
        "flux-schnell": "black-forest-labs/FLUX.1-schnell",
    }
    flux = config.model("flux-schnell")
    assert flux.resolved_defaults().steps == 4
    assert flux.resources.gpus == 1 and flux.runtime.device == "cuda"


def test_demo_config_resolves_local_sources_relative_to_the_file():
    config = load_config(ROOT / "server/demo/config.yaml")
    assert [m.source for m in config.models] == [
        str(ROOT / ".demo/tiny-sdxl"),
        str(ROOT / ".demo/tiny-flux"),
    ]
    assert all(m.resources.gpus == 0 and m.runtime.device == "cpu" for m in config.models)


def test_unset_defaults_take_the_family_values():
    sdxl = ModelSpec.model_validate(minimal()).resolved_defaults()
    flux = ModelSpec.model_validate(minimal(family="flux")).resolved_defaults()
    assert (sdxl.steps, sdxl.guidance_scale, sdxl.width) == (30, 5.0, 1024)
    assert (flux.steps, flux.guidance_scale, flux.width) == (4, 0.0, 1024)


def test_wire_names_are_camel_case_and_round_trip():
    spec = ModelSpec.model_validate(
        minimal(
            runtime={"cpuFallback": True, "maxBatchSize": 2, "maxBatchWaitMs": 5},
            limits={"maxPromptLength": 77},
            nodeSelector={"gpu": "a100"},
            hfTokenSecret={"name": "hf"},
        )
    )
    wire = spec.to_wire()
    assert wire["runtime"]["cpuFallback"] is True
    assert wire["limits"]["maxPromptLength"] == 77
    assert wire["hfTokenSecret"] == {"name": "hf", "key": "token"}
    assert "cpu_fallback" not in yaml.safe_dump(wire)
    assert ModelSpec.model_validate(yaml.safe_load(yaml.safe_dump(wire))) == spec


def test_snake_case_names_are_accepted_from_python():
    spec = ModelSpec(name="m", family="flux", source="a/b", runtime={"cpu_fallback": True})
    assert spec.runtime.cpu_fallback is True


@pytest.mark.parametrize(
    ("overrides", "field", "why"),
    [
        pytest.param({"family": "sd15"}, "family", "unknown family 'sd15'; known: sdxl, flux", id="unknown-family"),
        pytest.param({"source": ""}, "source", "at least 1 character", id="empty-source"),
        pytest.param({"name": "Bad_Name"}, "name", "pattern", id="name-not-dns-label"),
        pytest.param({"resources": {"gpus": -1}}, "resources.gpus", "greater than or equal", id="negative-gpus"),
        pytest.param({"runtime": {"device": "tpu"}}, "runtime.device", "Input should be", id="unknown-device"),
        pytest.param({"runtime": {"offload": "disk"}}, "runtime.offload", "Input should be", id="unknown-offload"),
        pytest.param({"limits": {"maxSteps": 0}}, "limits.maxSteps", "greater than or equal", id="zero-max-steps"),
        pytest.param({"resources": {"memory": "lots"}}, "resources.memory", "pattern", id="bad-quantity"),
        pytest.param({"defaults": {"width": 4096}}, "", "over limits.maxWidth", id="default-over-limit"),
        pytest.param({"defaults": {"width": 1001}}, "", "multiple of 8", id="default-not-multiple"),
        pytest.param({"env": {"1BAD": "x"}}, "env", "not a valid variable name", id="bad-env-name"),
        pytest.param({"replicas": "two"}, "replicas", "valid integer", id="replicas-not-int"),
        pytest.param({"surprise": 1}, "surprise", "Extra inputs", id="unknown-field"),
    ],
)
def test_invalid_model_specs_fail_naming_the_field(overrides, field, why):
    with pytest.raises(ConfigError) as err:
        parse_config({"models": [minimal(**overrides)]}, "test.yaml")
    message = str(err.value)
    assert message.startswith("test.yaml: invalid configuration")
    assert f"models.0{'.' + field if field else ''}:" in message
    assert why in message


def test_duplicate_model_names_are_refused():
    with pytest.raises(ConfigError, match="appears twice"):
        parse_config({"models": [minimal(), minimal()]}, "dup.yaml")


def test_a_config_needs_at_least_one_model():
    with pytest.raises(ConfigError, match="models: List should have at least 1 item"):
        parse_config({"models": []}, "empty.yaml")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        pytest.param("models: [", "not valid YAML", id="broken-yaml"),
        pytest.param("- just\n- a list\n", "expected a mapping", id="not-a-mapping"),
    ],
)
def test_unreadable_config_files_name_the_file(tmp_path, text, why):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(str(path)) and why in str(err.value)


def test_missing_config_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_server_config_defaults_listen_on_loopback_8000():
    config = ServerConfig(models=[minimal()])
    assert (config.host, config.port) == ("127.0.0.1", 8000)
    with pytest.raises(KeyError):
        config.model("nope")
