"""The operator's HTTP client for the Kubernetes API: JSON in and out, errors as KubeApiError.

The same connection as the router's (``tinyimg.kube.connection``: one credentials reader, one
way to build an httpx client, TLS material loaded into memory so no credential file of ours is
left behind) and the same errors; this client is synchronous because kopf runs the operator's
handlers in threads (httpx's pool is thread-safe).
"""

from __future__ import annotations

import atexit
import json
from typing import Any

import httpx

from tinyimg.kube.connection import KubeConfigError, KubeConnection
from tinyimg.kube.errors import KubeApiError, raise_for_kube_status

# A stuck call must not hold a handler thread: connect within 10 s, each read within 30 s.
REQUEST_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
POOL = httpx.Limits(max_connections=32, max_keepalive_connections=32)


class KubeApi:
    """JSON over httpx; thread-safe. ``connect`` again replaces the client (a new login)."""

    def __init__(self) -> None:
        self._client: httpx.Client | None = None
        atexit.register(self.close)

    def connect(self, connection: KubeConnection) -> None:
        try:
            client = httpx.Client(**connection.client_options(), timeout=REQUEST_TIMEOUT, limits=POOL)
        except KubeConfigError as err:
            raise KubeApiError(0, str(err)) from None
        self.close()
        self._client = client

    def close(self) -> None:
        """Drop the connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> dict[str, Any] | None:
        client = self._client
        if client is None:
            raise KubeApiError(0, "not logged in yet")
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            response = client.request(method, path, headers=headers,
                                      content=None if body is None else json.dumps(body).encode())
        except httpx.HTTPError as err:  # connection refused, timeouts, a closed pool: retry later
            raise KubeApiError(0, f"{type(err).__name__}: {err}") from None
        if response.status_code == 404 and method == "GET":
            return None
        raise_for_kube_status(response)
        return response.json() if response.content else {}

    def get(self, path: str) -> dict[str, Any] | None:
        return self.request("GET", path)
