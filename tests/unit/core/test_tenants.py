"""Keys files with tenants (tinyimg.core.tenants): YAML and one-key-per-line, the errors that name
the problem, the work unit, and the router's signed tenant header."""

from __future__ import annotations

import pytest

from tinyimg.core.auth import KeyFileError, hash_key
from tinyimg.core.tenants import (
    DEFAULT_TENANT,
    TENANT_HEADER,
    TENANT_SIGNATURE_HEADER,
    Tenant,
    build_tenant_headers,
    image_steps,
    load_tenants,
    read_tenant_description,
    read_tenant_header,
)

YAML = """
tenants:
  - name: studio
    priority: interactive
    keys: [sk-studio-1, sk-studio-2]
    maxQueued: 20
    maxInFlight: 2
    imageStepsPerMinute: 600
  - name: nightly
    priority: batch
    keys: [sk-nightly]
"""


def test_a_yaml_keys_file_maps_each_key_to_its_tenant(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text(YAML)
    table = load_tenants(path)
    studio = table.match("sk-studio-2")
    assert studio == Tenant("studio", "interactive", (hash_key("sk-studio-1"), hash_key("sk-studio-2")), 20, 2, 600.0)
    assert table.match("sk-nightly").priority == "batch" and table.match("sk-nightly").image_steps_per_minute is None
    assert table.match("sk-unknown") is None and table.match(None) is None
    assert "sk-studio-1" not in repr(table.tenants)  # only hashes are kept


def test_a_plain_keys_file_still_works_each_key_its_own_standard_tenant(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# team keys\nalpha\n\nbeta\n")
    table = load_tenants(path)
    alpha, beta = table.match("alpha"), table.match("beta")
    assert alpha.name == f"key-{hash_key('alpha')[:12]}" and alpha.priority == "standard"
    assert alpha != beta and alpha.max_queued is None and alpha.image_steps_per_minute is None


def test_a_mounted_secret_directory_is_read_file_by_file(tmp_path):
    (tmp_path / "tenants.yaml").write_text(YAML)
    (tmp_path / "..data").mkdir()  # Kubernetes' hidden link: skipped
    assert load_tenants(tmp_path).match("sk-nightly").name == "nightly"


@pytest.mark.parametrize(("text", "message"), [
    ("tenants:\n  - name: Studio\n    keys: [k]\n", "tenants.0.name"),
    ("tenants:\n  - name: a\n    priority: urgent\n    keys: [k]\n", "tenants.0.priority"),
    ("tenants:\n  - name: a\n    keys: []\n", "tenants.0.keys"),
    ("tenants:\n  - name: a\n    keys: [clé]\n", "tenants.0.keys: Value error, a key is visible ASCII"),
    ("tenants:\n  - name: a\n    keys: ['two words']\n", "tenants.0.keys"),
    ("good-key\nclé-non-ascii\n", "key 2: a key is visible ASCII characters only"),
    ("tenants:\n  - name: a\n    keys: [k]\n    maxInFlight: 0\n", "tenants.0.maxInFlight"),
    ("tenants:\n  - name: a\n    keys: [k]\n    imageStepsPerMinute: -1\n", "tenants.0.imageStepsPerMinute"),
    ("tenants:\n  - name: a\n    keys: [k]\n    maxQueue: 3\n", "tenants.0.maxQueue"),
    ("tenants:\n  - name: a\n    keys: [k]\n  - name: a\n    keys: [j]\n", "tenant 'a' is listed twice"),
    ("tenants:\n  - name: a\n    keys: [k]\n  - name: b\n    keys: [k]\n", "one key belongs to tenants 'a' and 'b'"),
    ("tenants: []\n", "tenants"),
    ("# nothing\n\n", "no API keys"),
])
def test_a_broken_keys_file_is_refused_naming_the_field(tmp_path, text, message):
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(KeyFileError, match=r"keys\.yaml") as err:
        load_tenants(path)
    assert message in str(err.value)


def test_an_unreadable_keys_file_is_refused(tmp_path):
    with pytest.raises(KeyFileError, match="cannot read"):
        load_tenants(tmp_path / "missing")
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(KeyFileError, match="not UTF-8"):
        load_tenants(tmp_path / "bin")


@pytest.mark.parametrize(("width", "height", "steps", "images", "expected"), [
    (1024, 1024, 1, 1, 1.0), (1024, 1024, 50, 8, 400.0), (512, 512, 4, 1, 1.0), (64, 64, 2, 1, 2 / 256),
])
def test_image_steps_is_the_gpu_cost(width, height, steps, images, expected):
    assert image_steps(width, height, steps, images) == pytest.approx(expected)
    # the example: a 1024^2, 50-step, 8-image request weighs 400x a 512^2, 4-step one
    assert image_steps(1024, 1024, 50, 8) / image_steps(512, 512, 4, 1) == 400


SECRET = b"s" * 32
STUDIO = Tenant("studio", "interactive", (), 20, 2, 600.0)


def headers_of(tenant: Tenant, secret: bytes) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in build_tenant_headers(tenant, secret)}


def test_the_router_tenant_header_round_trips_when_signed_with_the_shared_secret():
    assert read_tenant_header(headers_of(STUDIO, SECRET), SECRET) == STUDIO
    assert read_tenant_header(headers_of(STUDIO, SECRET), None) == STUDIO  # a pod without the secret believes it


@pytest.mark.parametrize("tamper", [
    lambda h: {**h, TENANT_SIGNATURE_HEADER: "0" * 64},
    lambda h: {**h, TENANT_HEADER: h[TENANT_HEADER].replace("interactive", "batch")},
    lambda h: {TENANT_HEADER: h[TENANT_HEADER]},
    lambda h: headers_of(STUDIO, b"another secret of 32 bytes......"),
])
def test_a_forged_or_altered_tenant_header_is_ignored(tamper):
    assert read_tenant_header(tamper(headers_of(STUDIO, SECRET)), SECRET) is None


@pytest.mark.parametrize("value", ["not json", "[]", '{"name": "UPPER", "priority": "standard"}',
                                   '{"name": "a", "priority": "vip"}', '{"name": "a"}', "\udcff"])
def test_a_malformed_tenant_header_is_ignored_without_a_secret(value):
    assert read_tenant_header({TENANT_HEADER: value}, None) is None


def test_a_description_reads_back_or_is_none():
    assert read_tenant_description(STUDIO.describe()) == STUDIO
    assert read_tenant_description(None) is None and read_tenant_description({"name": 3}) is None
    assert read_tenant_description(DEFAULT_TENANT.describe()) == DEFAULT_TENANT
