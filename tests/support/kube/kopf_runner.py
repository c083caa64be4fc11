"""A real kopf operator in the current event loop (start/stop repeatable), for integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import importlib


class KopfOperator:
    """A real kopf operator (handlers of ``module``) in the current event loop.

    Log it in through a kubeconfig (``Kube.write_kubeconfig`` + ``KUBECONFIG``) or a login handler.
    """

    def __init__(self, module: str, namespaces: tuple[str, ...] = ()) -> None:
        """``namespaces``: watch only these (like ``--namespace``); none: cluster-wide.

        Namespaced, kopf's namespace scanning is off: a namespaced Role answers its list of
        namespaces with 403, and kopf then serves the named namespaces, which is what this gives."""
        self.module = module
        self.namespaces = namespaces
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    async def start(self, timeout: float = 10.0) -> None:
        import kopf

        importlib.import_module(self.module)  # registers its handlers in kopf's default registry
        settings = kopf.OperatorSettings()
        settings.scanning.disabled = bool(self.namespaces)
        self._stop, ready = asyncio.Event(), asyncio.Event()
        self._task = asyncio.create_task(
            kopf.operator(clusterwide=not self.namespaces, namespaces=self.namespaces, settings=settings,
                          standalone=True, stop_flag=self._stop, ready_flag=ready)
        )
        await asyncio.wait_for(ready.wait(), timeout)

    async def stop(self) -> None:
        if self._task is None or self._stop is None:
            return
        self._stop.set()
        # kopf's graceful exit waits for idle per-object workers (seconds); a test needs no grace.
        done, _ = await asyncio.wait([self._task], timeout=0.5)
        if not done:
            self._task.cancel()
        # kopf's cancellation reaches the awaiting task too (suppressed, as before), and its
        # scheduler may shield its close from one cancellation: cancel again until it ends (bounded),
        # or the test loop's own teardown would wait for it forever.
        deadline = asyncio.get_running_loop().time() + 30
        while not self._task.done() and asyncio.get_running_loop().time() < deadline:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([self._task], timeout=1)
            if not self._task.done():
                self._task.cancel()
        if self._task.done() and not self._task.cancelled():
            self._task.exception()  # retrieved, so asyncio does not log it as never retrieved
        self._task = None
