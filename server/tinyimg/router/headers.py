"""Which headers the router passes on, both ways, and in what form: hop-by-hop headers (and those a
``Connection`` header names) stay on their hop; the client's key, request id and job headers are the
router's to set; names and values are normalised and checked as RFC 9110 has them, so a request
that could not be sent is refused before a pod is involved."""

from __future__ import annotations

import re

from tinyimg.core.jobs import JOB_HEADERS
from tinyimg.core.tenants import TENANT_HEADERS
from tinyimg.router.errors import RouterError

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
     "transfer-encoding", "upgrade", "host", "content-length"}
)
# The client's key is for the router; the router's own server adds date and server. The job
# headers (a job's ids and base URL) and the tenant headers are the router's to set: a client's would be believed by the pod.
NOT_FORWARDED_REQUEST = HOP_BY_HOP | {"authorization", "x-request-id"} | JOB_HEADERS | TENANT_HEADERS
NOT_RETURNED_RESPONSE = (HOP_BY_HOP - {"content-length"}) | {"date", "server"}
# RFC 9110 5.1/5.5: a field name is a token; a field value is visible ASCII or obs-text (0x80-0xff)
# with single spaces/tabs inside, no control characters. h11 (httpcore's HTTP/1.1 layer) refuses
# anything else, so anything else is refused here, before a pod is involved.
FIELD_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
FIELD_VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*)?")

def normalise_header(name: str, value: str) -> tuple[bytes, bytes]:
    """The header as bytes, surrounding whitespace dropped; RouterError 400 when no HTTP/1.1 client
    may send it. Starlette decoded the bytes as latin-1, so encoding back gives the client's bytes."""
    raw_name, raw_value = name.encode("latin-1"), value.encode("latin-1").strip(b" \t")
    if not FIELD_NAME.fullmatch(raw_name):
        raise RouterError(400, "unforwardable_request", f"header {name!r}: not a valid HTTP header name")
    if not FIELD_VALUE.fullmatch(raw_value):
        raise RouterError(
            400, "unforwardable_request", f"header {name!r}: value has characters HTTP does not allow (control characters)"
        )
    return raw_name, raw_value


def read_connection_names(headers: list[tuple[str, str]] | list[tuple[bytes, bytes]]) -> frozenset[str]:
    """The header names a message's ``Connection`` header lists: hop-by-hop for this message only
    (RFC 9110 7.6.1), so a proxy drops them like the fixed hop-by-hop set."""
    names: set[str] = set()
    for key, value in headers:
        k = key.decode("latin-1") if isinstance(key, bytes) else key
        if k.lower() == "connection":
            v = value.decode("latin-1") if isinstance(value, bytes) else value
            names.update(n.strip().lower() for n in v.split(",") if n.strip())
    return frozenset(names)


def build_upstream_headers(
    headers: list[tuple[str, str]], request_id: str, client_host: str | None
) -> list[tuple[bytes, bytes]]:
    """The headers to send a pod: end-to-end ones only (not those the client's Connection header
    names), normalised (see ``normalise_header``), the router's request id, and the client's
    address appended to X-Forwarded-For."""
    dropped = NOT_FORWARDED_REQUEST | read_connection_names(headers)
    out = [normalise_header(k, v) for k, v in headers if k.lower() not in dropped]
    out.append((b"x-request-id", request_id.encode("latin-1")))
    if client_host:
        prior = [v for k, v in out if k.lower() == b"x-forwarded-for"]
        out = [(k, v) for k, v in out if k.lower() != b"x-forwarded-for"]
        address = client_host.encode("latin-1")
        out.append((b"x-forwarded-for", b", ".join([*prior, address])))
    return out
