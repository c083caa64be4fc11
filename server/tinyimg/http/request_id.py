"""One rule for request ids in both services: a caller's X-Request-ID is kept only when it is short
and plain (it lands in logs and headers); otherwise a fresh one is made. The router sends its id
on to the backend, which keeps it by the same rule, so both log lines carry the same id."""

from __future__ import annotations

import re
import uuid

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def new_request_id() -> str:
    return uuid.uuid4().hex


def read_request_id(given: str | None) -> str:
    return given if given is not None and _SAFE_ID.fullmatch(given) else new_request_id()
