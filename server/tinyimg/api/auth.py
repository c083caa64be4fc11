"""Optional API keys for the generation routes (probes, metrics and listings stay open).

Key files are read and matched by the same pure functions the router uses (sha256 hashes only,
every stored hash compared in constant time), so both answer the same keys the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from starlette.exceptions import HTTPException

from tinyimg.router.auth import KeyFileError, load_key_hashes, match_key, parse_bearer
from tinyimg.spec import ConfigError


def load_api_keys(path: str | Path) -> list[str]:
    try:
        return load_key_hashes(path)
    except KeyFileError as err:
        raise ConfigError(str(err)) from None


def require_api_key(request: Request) -> None:
    hashes: list[str] | None = request.app.state.api_keys
    if hashes is not None and match_key(parse_bearer(request.headers.get("authorization")), hashes) is None:
        raise HTTPException(401, "a valid API key is required: Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"})


ApiKeyDep = Annotated[None, Depends(require_api_key)]
