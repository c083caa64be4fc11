"""The tinyimg command: argument handling and config errors (exit 2, file and field named)."""

import subprocess
import sys
import textwrap

import pytest

from tinyimg.cli import build_parser, main
from tinyimg.serve import load_serve_config
from tinyimg.spec import ConfigError

GOOD = textwrap.dedent(
    """\
    port: 9000
    models:
      - {name: one, family: sdxl, source: ./one}
      - {name: two, family: flux, source: ./two}
    """
)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinyimg", *args], capture_output=True, text=True, timeout=60)


def test_a_bad_config_exits_2_naming_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - {name: one, family: sdxl, source: ./one, limits: {maxSteps: lots}}\n")
    done = run_cli("serve", "--config", str(bad))
    assert done.returncode == 2
    assert str(bad) in done.stderr
    assert "models.0.limits.maxSteps" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_config_file_exits_2(tmp_path):
    done = run_cli("serve", "--config", str(tmp_path / "absent.yaml"))
    assert done.returncode == 2
    assert "absent.yaml: cannot read" in done.stderr


def test_an_unknown_model_name_exits_2_listing_the_known_ones(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(GOOD)
    with pytest.raises(ConfigError, match="--model three: not in the config; it has one, two"):
        load_serve_config(path, ["three"], None, None)
    assert main(["serve", "--config", str(path), "--model", "three"]) == 2


def test_model_flags_select_a_subset_and_flags_override_host_and_port(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(GOOD)
    config = load_serve_config(path, ["two"], "0.0.0.0", 8123)
    assert [m.name for m in config.models] == ["two"]
    assert (config.host, config.port) == ("0.0.0.0", 8123)
    assert load_serve_config(path, None, None, None).port == 9000


def test_serve_flags_parse():
    args = build_parser().parse_args(
        ["serve", "--config", "c.yaml", "--model", "a", "--model", "b", "--port", "81", "--log-level", "debug"]
    )
    assert (args.models, args.port, args.host, args.log_level) == (["a", "b"], 81, None, "debug")


def test_make_tiny_model_rejects_an_unknown_family():
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["make-tiny-model", "--family", "dalle", "--out", "x"])
    assert caught.value.code == 2


def test_make_tiny_lora_takes_a_family_and_an_output_directory():
    args = build_parser().parse_args(["make-tiny-lora", "--family", "flux", "--out", "/tmp/x"])
    assert (args.command, args.family, str(args.out)) == ("make-tiny-lora", "flux", "/tmp/x")
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["make-tiny-lora", "--family", "dalle", "--out", "x"])
    assert caught.value.code == 2


def test_router_subcommand_is_handed_its_own_arguments(monkeypatch):
    seen = []
    import tinyimg.router.cli as router_cli

    monkeypatch.setattr(router_cli, "main", lambda argv: seen.append(argv) or 0)
    assert main(["router", "--backend", "m=http://x", "--port", "9"]) == 0
    assert seen == [["--backend", "m=http://x", "--port", "9"]]
