"""A real kopf operator on its own thread and event loop (start/stop repeatable), for integration tests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import threading


class KopfOperator:
    """A real kopf operator (handlers of ``module``), run the way kopf documents embedding it: in
    a thread of its own with its own event loop.

    Its own loop keeps kopf's many tasks (watchers, workers, its scheduler's shielded close) out of
    the test's loop: stopping it can never leave a task behind that the test loop's teardown would
    then wait on forever. It talks to the emulator over HTTP like any client. Log it in through a
    kubeconfig (``Kube.write_kubeconfig`` + ``KUBECONFIG``) or a login handler.
    """

    def __init__(self, module: str, namespaces: tuple[str, ...] = ()) -> None:
        """``namespaces``: watch only these (like ``--namespace``); none: cluster-wide.

        Namespaced, kopf's namespace scanning is off: a namespaced Role answers its list of
        namespaces with 403, and kopf then serves the named namespaces, which is what this gives."""
        self.module = module
        self.namespaces = namespaces
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._ended: concurrent.futures.Future[None] = concurrent.futures.Future()

    async def start(self, timeout: float = 10.0) -> None:
        importlib.import_module(self.module)  # registers its handlers in kopf's default registry
        self._stop, ready = threading.Event(), threading.Event()
        self._ended = concurrent.futures.Future()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready, started), name="kopf", daemon=True)
        self._thread.start()
        await asyncio.wrap_future(started)
        ok = await asyncio.get_running_loop().run_in_executor(None, ready.wait, timeout)
        if not ok:
            await self.stop()
            raise TimeoutError(f"kopf did not get ready within {timeout}s")

    def _run(self, ready: threading.Event, started: concurrent.futures.Future[None]) -> None:
        import kopf

        settings = kopf.OperatorSettings()
        settings.scanning.disabled = bool(self.namespaces)
        # A test needs no grace for per-object workers (``batching`` is ``queueing`` in newer kopf).
        queueing = settings.queueing if hasattr(settings, "queueing") else settings.batching
        queueing.exit_timeout = 0.1
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._task = loop.create_task(
                kopf.operator(clusterwide=not self.namespaces, namespaces=self.namespaces, settings=settings,
                              standalone=True, stop_flag=self._stop, ready_flag=ready)
            )
            started.set_result(None)
            try:
                loop.run_until_complete(self._task)
            except (asyncio.CancelledError, Exception):  # cancelled at stop; kopf logs its own failures
                pass
            # Whatever kopf left behind gets one cancellation and a bounded wait, never more.
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.wait(leftovers, timeout=2))
        finally:
            loop.close()
            self._ended.set_result(None)

    async def stop(self, grace: float = 2.0, bound: float = 30.0) -> None:
        """Stop kopf: its stop flag (a graceful exit, closing its sessions), then cancellation, repeated until its
        task ends or ``bound`` passes; a thread that still hangs is a daemon and is left behind."""
        if self._thread is None:
            return
        self._stop.set()
        ended = asyncio.wrap_future(self._ended)
        done, _ = await asyncio.wait([ended], timeout=grace)
        deadline = asyncio.get_running_loop().time() + bound
        while not done and asyncio.get_running_loop().time() < deadline:
            # kopf's scheduler may shield its close from one cancellation: cancel again until it ends.
            if self._loop is not None and self._task is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._task.cancel)
            done, _ = await asyncio.wait([ended], timeout=1)
        if not done:
            ended.cancel()
        self._thread = None
