"""A failed Kubernetes API call, with the message of the API server's ``Status`` body."""

from __future__ import annotations

import json

import httpx

# Retrying cannot help these: the request itself is wrong (or the object is not there).
PERMANENT_STATUSES = frozenset({400, 404, 422})


class KubeApiError(Exception):
    """A failed API call; ``status`` 0 means no answer (connection, timeout); ``transient`` says
    whether retrying later can help."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.transient = status not in PERMANENT_STATUSES


def read_status_message(data: bytes) -> str:
    """The ``message`` of a ``Status`` body, else the body's text (bounded)."""
    try:
        message = json.loads(data).get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message) if message else data.decode(errors="replace")[:500]


def raise_for_kube_status(response: httpx.Response) -> None:
    """``KubeApiError`` for a 4xx/5xx answer (its body must have been read)."""
    if response.status_code >= 400:
        raise KubeApiError(response.status_code, read_status_message(response.content))
