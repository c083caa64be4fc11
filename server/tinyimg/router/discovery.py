"""What fills the router's backend table: a ``Discovery``. ``StaticDiscovery`` reads backends from
flags or a file; ``KubeDiscovery`` watches the cluster's ImageModels and pods and, for a model
scaled to zero, records the demand that brings a pod back."""

from __future__ import annotations

from typing import Protocol

from tinyimg.router.table import BackendTable


class Discovery(Protocol):
    # "static" or "kubernetes": shown in /status and /health
    @property
    def mode(self) -> str: ...

    async def start(self, table: BackendTable) -> None:
        """Fill ``table`` and keep it current until ``stop``."""

    async def stop(self) -> None: ...

    async def record_demand(self, model: str) -> None:
        """A request waits for ``model`` while no pod serves it: ask for one where that is possible."""
