"""A whole cluster on one machine: the emulated API server, the controllers, one process kubelet
and the Services, all on one event loop in a background thread, so that tests can be plain
synchronous code that runs the real ``kubectl`` and ``helm`` and calls pods over HTTP.

    with running_cluster(tmp_path) as cluster:
        cluster.kubectl("apply", "-f", "model.yaml")           # real binaries, KUBECONFIG set
        cluster.helm("install", "tinyimg", "charts/tinyimg", "-n", "tinyimg", "--create-namespace")
        cluster.get("v1/pods", "tinyimg", "name")               # read from the API's memory
        cluster.wait_until(lambda: ..., timeout=60)
        cluster.service_url("tinyimg", "tinyimg-router")        # http://<clusterIP>:8000

Every process the kubelet starts runs in its own process group; leaving the context (or the
interpreter) kills every group that is still there, whatever happened in the test.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.support.cluster.addresses import AddressPool
from tests.support.cluster.manager import ControllerManager
from tests.support.cluster.network import NetworkController, enter_cgroup
from tests.support.cluster.network import enforcement_unavailable as network_unavailable
from tests.support.cluster.node import ProcessKubelet, kill_group
from tests.support.cluster.services import ServiceController
from tests.support.kube.client import Kube, running_kube

log = logging.getLogger("tests.cluster")
ROOT = Path(__file__).resolve().parents[3]
NODE = "process-node"
TICK_SECONDS = 0.1
CONTROLLER_AGENT = "tinyimg-tests-control-plane"


def tool(name: str) -> Path:
    """The pinned binary ``make tools`` puts in .tools/ (helm or kubectl)."""
    return ROOT / ".tools" / name / name


class Cluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: set[subprocess.Popen[bytes]] = set()
        self.loop = asyncio.new_event_loop()
        self.kube: Kube | None = None
        self._thread = threading.Thread(target=self._run, name="emulated-cluster", daemon=True)
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.kubeconfig = workdir / "admin.kubeconfig"
        self.network: NetworkController | None = None  # NetworkPolicies enforced (network.py), where possible

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> Cluster:
        atexit.register(self.kill_all)
        self._thread.start()
        if not self._ready.wait(30) or self._error:
            raise RuntimeError(f"the emulated cluster did not start: {self._error!r}")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        async with running_kube() as kube:
            self.kube = kube
            kube.write_kubeconfig(self.kubeconfig, user="kubernetes-admin")
            pool = AddressPool()
            self.network = None if network_unavailable() else NetworkController(self, "tinyimg-" + pool.prefix.replace(".", "-"))
            self.kubelet = ProcessKubelet(self, NODE, self.workdir / "node", pool, kube.url, self.network)
            self.manager = ControllerManager(self, NODE)
            self.services = ServiceController(self, pool, self.network)
            self._ready.set()
            try:
                while not self._stopping.is_set():
                    for part in (self.manager, self.kubelet, self.services):
                        try:
                            await part.tick()
                        except Exception:  # one bad pass must not stop the cluster; the next retries
                            log.exception("%s pass failed", type(part).__name__)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), TICK_SECONDS)
            finally:
                self.kubelet.stop_all()
                await self.services.stop()
                if self.network is not None:
                    self.network.stop()
                await self.kubelet.client.aclose()

    def stop(self) -> None:
        if self._stopping is not None:
            self.loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(30)
        self.kill_all()

    def kill_all(self) -> None:
        for popen in list(self.processes):
            kill_group(popen)
        self.processes.clear()

    # -- inside the loop (used by the controllers and the kubelet) -------------------------------
    @property
    def emulator(self):
        return self.kube.emulator

    def read(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.kube.emulator.read(resource, namespace, name)

    def read_all(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.kube.emulator.read_all(resource, namespace)

    async def _send(self, method: str, path: str, body: Any = None, ctype: str = "application/merge-patch+json") -> dict[str, Any] | None:
        headers = {"User-Agent": CONTROLLER_AGENT, "Content-Type": ctype}
        async with self.kube.session.request(method, path, json=body, headers=headers) as resp:
            payload = await resp.json(content_type=None)
            if resp.status == 404:
                return None  # gone meanwhile: the next pass sees that
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path} -> {resp.status}: {payload.get('message')}")
            return payload

    async def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        resource = self.emulator.resource_of(obj["apiVersion"], obj["kind"])
        return await self._send("POST", self.kube.path(resource, obj["metadata"].get("namespace")), obj, "application/json")

    async def write(self, resource: str, namespace: str | None, name: str, patch: dict[str, Any]) -> None:
        await self._send("PATCH", self.kube.path(resource, namespace, name), patch)

    async def write_status(self, resource: str, namespace: str | None, name: str, status: dict[str, Any]) -> None:
        # The whole status is ours: replace it (a merge patch would keep keys we dropped).
        live = self.read(resource, namespace, name)
        if live is None:
            return
        patch = {"status": {**dict.fromkeys(live.get("status") or {}), **status}}
        await self._send("PATCH", self.kube.path(resource, namespace, name, "status"), patch)

    async def delete(self, resource: str, namespace: str | None, name: str) -> None:
        await self._send("DELETE", self.kube.path(resource, namespace, name), None)

    async def delete_now(self, resource: str, namespace: str | None, name: str) -> None:
        await self._send("DELETE", self.kube.path(resource, namespace, name), {"gracePeriodSeconds": 0}, "application/json")

    # -- from the test's thread ------------------------------------------------------------------
    def call(self, fn: Callable[[], Any], timeout: float = 30) -> Any:
        """Run ``fn`` in the cluster's loop (where the objects live) and return its result."""
        async def run() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.call(lambda: self.read(resource, namespace, name))

    def list(self, resource: str, namespace: str | None = None, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        return self.call(lambda: self.kube.list(resource, namespace, labels))

    def requests(self) -> list[Any]:
        return self.call(self.kube.requests)

    def wait_until(self, predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.2, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout}s: {what or predicate}\n{self.describe()}")
            time.sleep(interval)

    def service_url(self, namespace: str, name: str, port: int = 8000) -> str:
        service = self.wait_until(lambda: (s := self.get("v1/services", namespace, name)) and s["spec"].get("clusterIP") and s,
                                  timeout=30, what=f"service {namespace}/{name} has a clusterIP")
        return f"http://{service['spec']['clusterIP']}:{port}"

    def identity(self, key: str, namespace: str, labels: dict[str, str]) -> Callable[[], None] | None:
        """A ``preexec_fn`` that runs a process the test starts as if it were a pod in ``namespace``
        with ``labels``, for the NetworkPolicies (None where they are not enforced)."""
        if self.network is None:
            return None
        path = self.call(lambda: self.network.add_identity(key, namespace, labels))
        return lambda: enter_cgroup(path)

    def pod_processes(self) -> list[int]:
        """PIDs of the kubelet's processes that are still running."""
        return sorted(p.pid for p in self.call(lambda: list(self.processes)) if p.poll() is None)

    def run_tool(self, name: str, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        binary = tool(name)
        if not binary.is_file():
            raise AssertionError(f"{name} not found at {binary}: run `make tools`")
        env = {"KUBECONFIG": str(self.kubeconfig), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "HOME": str(self.workdir), "HELM_CACHE_HOME": str(self.workdir / "helm-cache"),
               "HELM_CONFIG_HOME": str(self.workdir / "helm-config"), "HELM_DATA_HOME": str(self.workdir / "helm-data")}
        result = subprocess.run([str(binary), *args], input=stdin, capture_output=True, text=True, env=env,
                                timeout=timeout, check=False, cwd=ROOT)
        if check and result.returncode != 0:
            raise AssertionError(f"{name} {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def kubectl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run_tool("kubectl", *args, **kw)

    def helm(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run_tool("helm", *args, **kw)

    def describe(self) -> str:
        """Pods and their logs' last lines, for failure messages."""
        lines = []
        for pod in self.list("v1/pods"):
            st = pod.get("status") or {}
            ready = [c.get("status") for c in st.get("conditions") or [] if c.get("type") == "Ready"]
            lines.append(f"pod {pod['metadata']['namespace']}/{pod['metadata']['name']} {st.get('phase')} "
                         f"ip={st.get('podIP')} ready={ready} {st.get('message', '')}")
        for logfile in sorted((self.workdir / "node" / "pods").glob("*/logs/*.log")):
            tail = logfile.read_text(errors="replace").splitlines()[-8:]
            lines.append(f"--- {logfile.parent.parent.name}/{logfile.name}\n" + "\n".join(tail))
        return "\n".join(lines)


@contextlib.contextmanager
def running_cluster(workdir: Path) -> Iterator[Cluster]:
    cluster = Cluster(workdir).start()
    try:
        yield cluster
    finally:
        cluster.stop()

