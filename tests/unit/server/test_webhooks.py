"""Webhook URL checks and Standard Webhooks signatures (pure parts; delivery is in
tests/integration/server/test_jobs_webhooks.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from tinyimg.core.errors import InvalidField
from tinyimg.runtime.webhooks import (
    build_pinned_url,
    build_webhook_headers,
    check_resolved,
    check_webhook_url,
    is_forbidden_address,
    read_webhook_secret,
)

ALLOWED = ["hooks.example", "127.0.0.1"]


@pytest.mark.parametrize(
    "url, why",
    [
        pytest.param("ftp://hooks.example/x", "http:// or https://", id="not-http"),
        pytest.param("http://other.example/x", "not on this server's webhook allow-list", id="off-list"),
        pytest.param("http://169.254.169.254/latest", "not on this server's webhook allow-list", id="metadata-off-list"),
        pytest.param("http://user:pw@hooks.example/", "credentials", id="credentials"),
        pytest.param("http://hooks.example:99999/", "not a valid URL", id="bad-port"),
        pytest.param("/relative", "http:// or https://", id="relative"),
        # urlsplit removes a tab where an HTTP client may not: refused, so both read one URL.
        pytest.param("http://hooks.exa\tmple/x", "whitespace or control", id="tab-in-host"),
        pytest.param("http://hooks.example:0/x", "port 0", id="port-zero"),
    ],
)
def test_bad_webhook_urls_are_refused_naming_the_field(url, why):
    with pytest.raises(InvalidField) as err:
        check_webhook_url(url, ALLOWED)
    assert err.value.field == "webhook" and err.value.status == 422 and why in err.value.reason


def test_no_allow_list_means_no_webhooks():
    with pytest.raises(InvalidField, match="not enabled"):
        check_webhook_url("http://hooks.example/", None)


def test_an_allowed_url_gives_its_host_and_port():
    assert check_webhook_url("https://HOOKS.example/path?q=1", ALLOWED) == ("hooks.example", 443)
    assert check_webhook_url("http://127.0.0.1:8123/h", ALLOWED) == ("127.0.0.1", 8123)


@pytest.mark.parametrize(
    "address, forbidden",
    [("169.254.169.254", True), ("fe80::1", True), ("fd00:ec2::254", True), ("::ffff:169.254.1.1", True),
     ("0.0.0.0", True), ("127.0.0.1", False), ("10.0.0.5", False), ("2001:db8::1", False),
     # The metadata address reached through IPv6 translators: NAT64, 6to4, Teredo, IPv4-compatible.
     ("64:ff9b::a9fe:a9fe", True), ("64:ff9b::169.254.169.254", True), ("2002:a9fe:a9fe::1", True),
     ("2001:0:4136:e378:8000:63bf:5601:5601", True), ("::169.254.169.254", True),
     ("64:ff9b::a00:5", False), ("2002:a00:5::1", False)],
    ids=lambda v: str(v),
)
def test_link_local_and_metadata_addresses_are_forbidden(address, forbidden):
    assert is_forbidden_address(address) is forbidden


def test_an_allowed_name_resolving_to_link_local_is_refused():
    with pytest.raises(InvalidField, match="link-local or metadata"):
        check_resolved("169.254.169.254", 80)  # an address literal resolves to itself, no DNS
    assert check_resolved("127.0.0.1", 80) == "127.0.0.1"  # the address the delivery then connects to


@pytest.mark.parametrize(("url", "address", "pinned"), [
    ("http://hooks.example/h?x=1", "10.0.0.5", "http://10.0.0.5/h?x=1"),
    ("https://hooks.example:8443/h", "2001:db8::7", "https://[2001:db8::7]:8443/h"),
], ids=["ipv4-default-port", "ipv6-explicit-port"])
def test_delivery_connects_to_the_checked_address(url, address, pinned):
    assert build_pinned_url(url, address) == pinned


def test_the_signature_is_hmac_sha256_over_id_timestamp_and_body(tmp_path):
    secret = b"0123456789abcdef"
    path = tmp_path / "secret"
    path.write_text("whsec_" + base64.b64encode(secret).decode() + "\n")
    assert read_webhook_secret(str(path)) == secret
    headers = build_webhook_headers(secret, "msg_1", 1700000000, b'{"a":1}')
    expected = hmac.new(secret, b'msg_1.1700000000.{"a":1}', hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(expected).decode()
    assert (headers["webhook-id"], headers["webhook-timestamp"]) == ("msg_1", "1700000000")
