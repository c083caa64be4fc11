"""Tenants from the chart: `router.tenants` becomes the router's keys file (YAML in the chart-made
Secret, read back here by the router's own loader), turns key checks on, and is checked by the
values schema (generated from the keys file's own tenant schema)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from tests.chart.helm import lint, one, render, template
from tinyimg.core.auth import hash_key
from tinyimg.core.tenants import Tenant, load_tenants

TENANTS = [
    {"name": "studio", "priority": "interactive", "keys": ["sk-studio"], "maxInFlight": 2, "imageStepsPerMinute": 600},
    {"name": "nightly", "priority": "batch", "keys": ["sk-nightly-1", "sk-nightly-2"], "maxQueued": 500},
]


def values_file(tmp_path: Path, router: dict) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"router": router}))
    return path


def test_tenants_become_the_routers_keys_file(tmp_path):
    objects = render((values_file(tmp_path, {"tenants": TENANTS}),))
    secret = one(objects, "Secret", "-api-keys")
    content = base64.b64decode(secret["data"]["api-keys"]).decode()
    (tmp_path / "mounted").write_text(content)
    table = load_tenants(tmp_path / "mounted")  # what the router reads at start
    assert table.match("sk-studio") == Tenant("studio", "interactive", (hash_key("sk-studio"),), None, 2, 600.0)
    assert table.match("sk-nightly-2").name == "nightly" and table.match("sk-nightly-2").max_queued == 500
    router = one(objects, "Deployment", "-router")
    container = router["spec"]["template"]["spec"]["containers"][0]
    assert "--api-keys-file=/etc/tinyimg/api-keys/api-keys" in container["args"]  # keys on without apiKeys.enabled
    volume = next(v for v in router["spec"]["template"]["spec"]["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    revision = "tinyimg.io/api-keys-revision"
    assert router["spec"]["template"]["metadata"]["annotations"][revision] == secret["metadata"]["annotations"][revision]


def test_an_existing_secret_may_hold_the_tenants_yaml(tmp_path):
    objects = render(sets=("router.apiKeys.enabled=true", "router.apiKeys.existingSecret=team-tenants"))
    assert not [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"].endswith("-api-keys")]
    volumes = one(objects, "Deployment", "-router")["spec"]["template"]["spec"]["volumes"]
    assert next(v for v in volumes if v["name"] == "api-keys")["secret"]["secretName"] == "team-tenants"


@pytest.mark.parametrize(("tenant", "field"), [
    ({"name": "Studio", "keys": ["k"]}, "name"),
    ({"name": "a", "priority": "vip", "keys": ["k"]}, "priority"),
    ({"name": "a", "keys": []}, "keys"),
    ({"name": "a", "keys": ["k"], "maxInFlight": 0}, "maxInFlight"),
    ({"name": "a", "keys": ["k"], "imageStepsPerMinute": 0}, "imageStepsPerMinute"),
    ({"name": "a", "keys": ["k"], "quota": 5}, "quota"),
])
def test_the_schema_refuses_a_broken_tenant_naming_the_field(tmp_path, tenant, field):
    path = values_file(tmp_path, {"tenants": [tenant]})
    linted, rendered = lint((path,)), template((path,))
    assert linted.returncode != 0 and rendered.returncode != 0
    assert "values don't meet the specifications of the schema" in rendered.stderr and field in rendered.stderr


def test_keys_and_tenants_together_fail_with_a_message(tmp_path):
    path = values_file(tmp_path, {"tenants": TENANTS, "apiKeys": {"enabled": True, "keys": ["loose-key"]}})
    rendered = template((path,))
    assert rendered.returncode != 0 and "router.apiKeys.keys and router.tenants exclude each other" in rendered.stderr
