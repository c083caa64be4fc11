"""Optional API keys for the generation routes (probes, metrics and listings stay open).

Key files are read and matched by the same pure functions the router uses (sha256 hashes only,
every stored hash compared in constant time), so both answer the same keys the same way. Failed
attempts are limited per client address (429 past the limit), so keys cannot be guessed fast.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from tinyimg.errors import ApiError
from tinyimg.router.auth import (
    KeyFileError,
    RateLimiter,
    load_key_hashes,
    match_key,
    parse_bearer,
)
from tinyimg.spec import ConfigError

UNAUTHORIZED = "a valid API key is required: Authorization: Bearer <key>"


def load_api_keys(path: str | Path) -> list[str]:
    try:
        return load_key_hashes(path)
    except KeyFileError as err:
        raise ConfigError(str(err)) from None


def is_authenticated(request: Request) -> bool:
    """True when keys are configured and the request carries one of them."""
    hashes: list[str] | None = request.app.state.api_keys
    return hashes is not None and match_key(parse_bearer(request.headers.get("authorization")), hashes) is not None


def require_api_key(request: Request) -> None:
    if request.app.state.api_keys is None or is_authenticated(request):
        return
    limiter: RateLimiter = request.app.state.auth_failures
    wait = limiter.take(request.client.host if request.client else "unknown", time.monotonic())
    if wait > 0:
        raise ApiError("too many failed API key attempts from this address", 429, "rate_limited", wait)
    raise ApiError(UNAUTHORIZED, 401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})


ApiKeyDep = Annotated[None, Depends(require_api_key)]
