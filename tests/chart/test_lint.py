"""helm lint --strict, and values.schema.json turning bad values away."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.chart.helm import VALUES_ALL, lint, template


@pytest.mark.parametrize("values_files", [(), (VALUES_ALL,)], ids=["defaults", "every-option"])
def test_helm_lint_strict_passes(values_files: tuple[Path, ...]) -> None:
    result = lint(values_files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


BAD_VALUES = {
    "replicas-not-a-number": ({"router": {"replicas": "two"}}, "router.replicas"),
    "watch-all-not-a-bool": ({"operator": {"watchAllNamespaces": "yes"}}, "watchAllNamespaces"),
    "unknown-top-level-key": ({"operatr": {"enabled": True}}, "operatr"),
    "model-name-not-dns": ({"models": [{"name": "SDXL_Base", "family": "sdxl", "source": "x/y"}]}, "models.0.name"),
    "model-field-misspelt": (
        {"models": [{"name": "m", "family": "sdxl", "source": "x/y", "resources": {"memroy": "1Gi"}}]}, "memroy",
    ),
    "model-family-unknown": ({"models": [{"name": "m", "family": "dalle", "source": "x/y"}]}, "models.0.family"),
    "model-without-source": ({"models": [{"name": "sdxl", "family": "sdxl"}]}, "source"),
    "ingress-path-not-absolute": ({"router": {"ingress": {"path": "generate"}}}, "router.ingress.path"),
    "bad-pull-policy": ({"operator": {"image": {"pullPolicy": "Sometimes"}}}, "pullPolicy"),
    "bad-scrape-interval": ({"monitoring": {"serviceMonitor": {"enabled": True, "interval": "often"}}}, "interval"),
}


@pytest.mark.parametrize("values, field", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_schema_rejects_bad_value_in_lint_and_template(tmp_path: Path, values: dict, field: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(values))
    linted, rendered = lint((bad,)), template((bad,))
    assert linted.returncode != 0, linted.stdout
    assert rendered.returncode != 0, rendered.stdout
    assert "values don't meet the specifications of the schema" in rendered.stderr
    assert field in rendered.stderr


def test_api_keys_enabled_without_any_key_source_fails_with_a_message() -> None:
    result = template(sets=("router.apiKeys.enabled=true",))
    assert result.returncode != 0
    assert "router.apiKeys.existingSecret, router.apiKeys.keys or router.tenants" in result.stderr
