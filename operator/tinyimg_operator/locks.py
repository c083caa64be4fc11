"""One lock per ImageModel: its own handler and its children's handlers never race."""

from __future__ import annotations

import threading


class ModelLocks:
    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def __call__(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())
