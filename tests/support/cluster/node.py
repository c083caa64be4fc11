"""The process kubelet: runs the Pods bound to its node as local process groups.

For each Pod with ``spec.nodeName`` equal to its node it takes a loopback address, materialises
the volumes, starts every container (see ``containers`` for the image, filesystem and network
mappings), probes readiness over HTTP on the pod's address and writes the Pod's status (phase,
``podIP``, ``Ready``/``ContainersReady`` conditions, container states with ``restartCount``). A
container that exits is restarted (``restartPolicy: Always``) after a back-off that doubles from
0.5 s to 5 s (a kubelet's 10 s to 5 min, compressed for tests), shown as ``CrashLoopBackOff``;
under ``Never`` (and ``OnFailure`` after a success: a Job's pods) it stays terminated, and once
every container has, the Pod is ``Succeeded`` (all exited 0) or ``Failed``. A
Pod marked for deletion gets SIGTERM on each process group, SIGKILL after its grace period, and is
then deleted for good (``gracePeriodSeconds: 0``). A template that cannot run leaves the Pod
``Failed`` with the reason, never an exception in the harness. Probe periods are capped at
:data:`PROBE_PERIOD_CAP` seconds (time compression for tests). The files of a running pod's
ConfigMap and Secret volumes follow their objects (checked every :data:`VOLUME_SYNC_SECONDS`,
each changed file replaced at once, as a kubelet's atomic swap does; a real kubelet takes up to
its sync period plus its cache TTL, about a minute by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.cluster.addresses import AddressPool
from tests.support.cluster.containers import (
    SYSTEM_EXECUTABLES,
    CannotRun,
    ContainerPlan,
    PodPlan,
    mount_dirs,
    pod_mounts,
    pod_plan,
    rewrite_text,
    service_hosts,
    volume_plan,
)
from tests.support.cluster.network import NetworkController, enter_cgroup
from tests.support.kube.client import kubeconfig

log = logging.getLogger("tests.cluster.kubelet")
VENV_BIN = Path(sys.executable).parent
PROBE_PERIOD_CAP = 0.5
VOLUME_SYNC_SECONDS = 1.0
# A kubelet's FallbackToLogsOnError message: the log's last 80 lines or 2048 bytes, whichever is less.
LOG_MESSAGE_LINES, LOG_MESSAGE_BYTES = 80, 2048
MESSAGE_FILE_BYTES = 4096  # a kubelet keeps at most this much of the termination message file
BACKOFF_START, BACKOFF_MAX = 0.5, 5.0


def termination_message(container: Container) -> str:
    """What a kubelet puts in ``state.terminated.message``: the termination message file (at most
    4096 bytes), else, under FallbackToLogsOnError and for an error exit, the log's tail."""
    path = container.plan.message_file
    written = path.read_bytes()[:MESSAGE_FILE_BYTES].decode(errors="replace") if path and path.is_file() else ""
    if written.strip():
        return written
    return log_tail(container.log_path) if container.plan.logs_on_error and container.last_exit else ""


def log_tail(path: Path) -> str:
    """What a kubelet puts in ``state.terminated.message`` under FallbackToLogsOnError (this run's log)."""
    try:
        data = path.read_bytes()[-64 * 1024:]
    except OSError:
        return ""
    run = data.rsplit(b"\n--- start ", 1)[-1].split(b"\n", 1)[-1] if b"--- start " in data else data
    lines = run.decode(errors="replace").splitlines()[-LOG_MESSAGE_LINES:]
    return "\n".join(lines).encode()[-LOG_MESSAGE_BYTES:].decode(errors="ignore")


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Container:
    plan: ContainerPlan
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    restart_count: int = 0
    started_at: str = ""
    restart_at: float = 0.0
    last_exit: int | None = None
    last_finished: str = ""
    last_message: str = ""  # the termination message (the log's tail, FallbackToLogsOnError)
    ready: bool = False
    probe_at: float = 0.0
    probing: bool = False
    started_ok: bool = False  # the startup probe succeeded (or there is none) since the last start
    startup_failed: int = 0  # startup probe failures in a row
    kill_at: float | None = None  # SIGKILL then, after the SIGTERM of a failed startup probe
    done: bool = False  # exited for good (restartPolicy Never, or OnFailure after a success)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class PodRuntime:
    namespace: str
    name: str
    uid: str
    ip: str
    root: Path
    containers: list[Container] = field(default_factory=list)
    grace: float = 30.0
    failed: str | None = None  # the message when the template cannot run
    stop_deadline: float | None = None
    started: str = ""
    last_status: dict[str, Any] | None = None
    volumes_synced: float = 0.0  # monotonic time of the last volume sync
    restart_policy: str = "Always"  # Always | OnFailure | Never (a Job's pods)


class ProcessKubelet:
    """One node. ``tick()`` (called by the harness's loop) does one level-based pass."""

    def __init__(self, cluster: Any, node: str, root: Path, pool: AddressPool, api_url: str,
                 network: NetworkController | None = None) -> None:
        self.cluster, self.node, self.root, self.pool, self.api_url = cluster, node, root, pool, api_url
        self.network = network  # when set, each pod's processes run in its own cgroup (network.py)
        self.pods: dict[str, PodRuntime] = {}  # by uid
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(2.0))

    # -- the pass ------------------------------------------------------------------------------
    async def tick(self) -> None:
        bound = {p["metadata"]["uid"]: p for p in self.cluster.read_all("v1/pods") if p["spec"].get("nodeName") == self.node}
        for uid, runtime in list(self.pods.items()):
            if uid not in bound:  # force-deleted: nothing to wait for
                self._kill(runtime)
                self._forget(runtime)
        for uid, pod in bound.items():
            runtime = self.pods.get(uid)
            if runtime is None:
                if pod["metadata"].get("deletionTimestamp"):
                    await self.cluster.delete_now("v1/pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
                    continue
                if not self._names_resolve(pod["metadata"]["namespace"]):
                    continue  # mapping 4 needs every Service's ClusterIP: the next pass starts it
                runtime = self._start_pod(pod)
            if pod["metadata"].get("deletionTimestamp"):
                await self._terminate(runtime, pod)
                continue
            self._supervise(runtime)
            self._sync_volumes(runtime, pod)
            await self._write_status(runtime, pod)

    def _names_resolve(self, namespace: str) -> bool:
        """Every Service of the namespace has its ClusterIP (a Service created with the pod's
        Deployment gets it on the Service controller's next pass): its name maps to an address."""
        return all((s.get("spec") or {}).get("clusterIP") for s in self.cluster.read_all("v1/services", namespace))

    # -- start -----------------------------------------------------------------------------------
    def _start_pod(self, pod: dict[str, Any]) -> PodRuntime:
        meta = pod["metadata"]
        ports = {int(p["containerPort"]) for c in pod["spec"].get("containers") or [] for p in c.get("ports") or []}
        ip = self.pool.take(ports)
        root = self.root / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
        runtime = PodRuntime(meta["namespace"], meta["name"], meta["uid"], ip, root, started=_now(),
                             restart_policy=pod["spec"].get("restartPolicy") or "Always")
        self.pods[meta["uid"]] = runtime
        try:
            hosts = service_hosts(self.cluster.read_all("v1/services"), meta["namespace"])
            plan = pod_plan(pod, ip, root, self._lookup(meta["namespace"]), self._base_env(pod, root), hosts)
            self._materialise(pod, plan, root, ip, hosts)
        except CannotRun as exc:
            runtime.failed = str(exc)
            log.warning("pod %s/%s cannot run: %s", meta["namespace"], meta["name"], exc)
            return runtime
        runtime.grace = plan.grace_seconds
        (root / "logs").mkdir(parents=True, exist_ok=True)
        for cplan in plan.containers:
            container = Container(cplan, root / "logs" / f"{cplan.name}.log")
            runtime.containers.append(container)
            self._spawn(container, root, meta["uid"])
        return runtime

    def _lookup(self, namespace: str):
        return lambda resource, name: self.cluster.read(f"v1/{resource}", namespace, name)

    def _base_env(self, pod: dict[str, Any], root: Path) -> dict[str, str]:
        sa = pod["spec"].get("serviceAccountName") or "default"
        ns = pod["metadata"]["namespace"]
        token = self.cluster.emulator.issue_token(f"system:serviceaccount:{ns}:{sa}")
        root.mkdir(parents=True, exist_ok=True)
        config = root / "kubeconfig"
        config.write_text(yaml.safe_dump(kubeconfig(self.api_url, token, ns)))
        env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(root)}
        if pod["spec"].get("automountServiceAccountToken", True):  # a pod without a token gets no credentials
            env["KUBECONFIG"] = str(config)
        if os.environ.get("PYTHONPATH"):  # the sources under test, when they are not the venv's own
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return env

    def _materialise(self, pod: dict[str, Any], plan: PodPlan, root: Path, ip: str, hosts: dict[str, str]) -> None:
        dirs, mounts = mount_dirs(pod, root), pod_mounts(pod, root)
        for volume in plan.volumes:
            if volume.persistent_key:
                target = self.root / "claims" / volume.persistent_key
            else:
                target = root / "volumes" / volume.name
            target.mkdir(parents=True, exist_ok=True)
            for rel, content in volume.files.items():
                path = target / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(rewrite_text(content, mounts, ip, hosts))  # mappings 2 to 4 (containers.py)
            for mount in dirs.get(volume.name, []):
                mount.parent.mkdir(parents=True, exist_ok=True)
                if not mount.exists():
                    mount.symlink_to(target, target_is_directory=True)

    def _sync_volumes(self, runtime: PodRuntime, pod: dict[str, Any]) -> None:
        """Rewrite the ConfigMap and Secret files of a running pod whose objects changed."""
        if runtime.failed or time.monotonic() - runtime.volumes_synced < VOLUME_SYNC_SECONDS:
            return
        runtime.volumes_synced = time.monotonic()
        mounts, hosts = pod_mounts(pod, runtime.root), service_hosts(self.cluster.read_all("v1/services"), runtime.namespace)
        for volume in pod["spec"].get("volumes") or []:
            if "configMap" not in volume and "secret" not in volume:
                continue
            try:
                plan = volume_plan(volume, self._lookup(runtime.namespace), runtime.namespace)
            except CannotRun:  # deleted meanwhile: a kubelet keeps the last files
                continue
            for rel, content in plan.files.items():
                path = runtime.root / "volumes" / volume["name"] / rel
                data = rewrite_text(content, mounts, runtime.ip, hosts)
                if path.exists() and path.read_bytes() == data:
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                staged = path.with_name(f".{path.name}.new")
                staged.write_bytes(data)
                os.replace(staged, path)

    def _spawn(self, container: Container, root: Path, uid: str) -> None:
        program = container.plan.argv[0]
        path = shutil.which(program) if program in SYSTEM_EXECUTABLES else str(VENV_BIN / program)
        argv = [path or program, *container.plan.argv[1:]]
        if container.plan.message_file is not None:  # a fresh, empty file for each run
            container.plan.message_file.parent.mkdir(parents=True, exist_ok=True)
            container.plan.message_file.write_bytes(b"")
        cgroup = self.network.pod_cgroup(uid) if self.network is not None else None
        with container.log_path.open("ab") as out:
            out.write(f"--- start {_now()} (restart {container.restart_count}): {' '.join(argv)}\n".encode())
            out.flush()
            container.popen = subprocess.Popen(
                argv, env=container.plan.env, cwd=root, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,  # its own process group, killed as one
                preexec_fn=(lambda: enter_cgroup(cgroup)) if cgroup is not None else None,
            )
        self.cluster.processes.add(container.popen)
        container.started_at, container.ready = _now(), False
        container.started_ok, container.startup_failed, container.kill_at = container.plan.startup_path is None, 0, None
        container.probe_at = time.monotonic() + container.plan.probe_initial_delay

    # -- run -------------------------------------------------------------------------------------
    def _supervise(self, runtime: PodRuntime) -> None:
        now = time.monotonic()
        for container in runtime.containers:
            if container.popen is not None and container.popen.poll() is not None:
                code = container.popen.returncode  # a signal is -N to Popen, 128+N to a container runtime
                container.last_exit, container.last_finished = (code if code >= 0 else 128 - code), _now()
                container.last_message = termination_message(container)
                container.ready = False
                self.cluster.processes.discard(container.popen)
                container.popen = None
                policy = runtime.restart_policy
                if policy == "Never" or (policy == "OnFailure" and container.last_exit == 0):
                    container.done = True
                    log.info("pod %s/%s container %s exited %s; not restarted (restartPolicy %s)", runtime.namespace,
                             runtime.name, container.plan.name, container.last_exit, policy)
                    continue
                container.restart_count += 1
                delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** (container.restart_count - 1))
                container.restart_at = now + delay
                log.info("pod %s/%s container %s exited %s; restart in %.1fs", runtime.namespace, runtime.name,
                         container.plan.name, container.last_exit, delay)
            if container.alive() and container.kill_at is not None and now >= container.kill_at:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(container.popen.pid, signal.SIGKILL)
            if container.popen is None and not container.done and now >= container.restart_at:
                self._spawn(container, runtime.root, runtime.uid)
            if container.alive() and not container.probing and now >= container.probe_at:
                container.probing = True
                asyncio.get_running_loop().create_task(self._probe(runtime, container))

    async def _probe(self, runtime: PodRuntime, container: Container) -> None:
        try:
            if container.plan.port is None:
                container.ready = container.alive()
                return
            if not container.started_ok:  # a kubelet runs the startup probe alone until it succeeds
                await self._probe_startup(runtime, container)
                return
            if container.plan.probe_tcp:
                try:
                    _, writer = await asyncio.wait_for(asyncio.open_connection(runtime.ip, container.plan.port), 2)
                    writer.close()
                    container.ready = container.alive()
                except (OSError, TimeoutError):
                    container.ready = False
                return
            url = f"http://{runtime.ip}:{container.plan.port}{container.plan.probe_path}"
            try:
                resp = await self.client.get(url)
                container.ready = container.alive() and 200 <= resp.status_code < 400
            except httpx.HTTPError:
                container.ready = False
        finally:
            container.probe_at = time.monotonic() + min(container.plan.probe_period, PROBE_PERIOD_CAP)
            container.probing = False

    async def _probe_startup(self, runtime: PodRuntime, container: Container) -> None:
        """failureThreshold failures in a row: SIGTERM, SIGKILL after the grace period; the exit is
        then a crash like any other (restart with back-off, the log tail as the message)."""
        url = f"http://{runtime.ip}:{container.plan.port}{container.plan.startup_path}"
        try:
            ok = 200 <= (await self.client.get(url)).status_code < 400
        except httpx.HTTPError:
            ok = False
        if ok:
            container.started_ok, container.startup_failed = True, 0
            return
        container.startup_failed += 1
        if container.startup_failed >= container.plan.startup_failures and container.alive() and container.kill_at is None:
            log.info("pod %s/%s container %s failed its startup probe %d times; killing", runtime.namespace,
                     runtime.name, container.plan.name, container.startup_failed)
            popen = container.popen
            with contextlib.suppress(ProcessLookupError):
                if popen is not None:
                    os.killpg(popen.pid, signal.SIGTERM)
            container.kill_at = time.monotonic() + runtime.grace

    def _status(self, runtime: PodRuntime) -> dict[str, Any]:
        if runtime.failed:
            return {"phase": "Failed", "reason": "CannotRun", "message": runtime.failed, "podIP": runtime.ip,
                    "startTime": runtime.started,
                    "conditions": [{"type": "Ready", "status": "False", "reason": "CannotRun", "message": runtime.failed}]}
        statuses = []
        for c in runtime.containers:
            if c.done:
                state = {"terminated": {"exitCode": c.last_exit, "reason": "Completed" if c.last_exit == 0 else "Error",
                                        "startedAt": c.started_at, "finishedAt": c.last_finished}}
                if c.last_message:
                    state["terminated"]["message"] = c.last_message
            elif c.alive():
                state = {"running": {"startedAt": c.started_at}}
            else:
                state = {"waiting": {"reason": "CrashLoopBackOff", "message": f"back-off restarting, last exit {c.last_exit}"}}
            entry = {"name": c.plan.name, "ready": c.ready, "started": c.alive() and c.started_ok, "restartCount": c.restart_count,
                     "image": c.plan.argv[0], "imageID": "", "state": state}
            if c.last_exit is not None and not c.done:
                entry["lastState"] = {"terminated": {"exitCode": c.last_exit, "finishedAt": c.last_finished,
                                                     "reason": "Error" if c.last_exit else "Completed"}}
                if c.last_message:
                    entry["lastState"]["terminated"]["message"] = c.last_message
            statuses.append(entry)
        ready = all(c.ready for c in runtime.containers)
        flag = "True" if ready else "False"
        finished = bool(runtime.containers) and all(c.done for c in runtime.containers)
        phase = ("Succeeded" if all(c.last_exit == 0 for c in runtime.containers) else "Failed") if finished else "Running"
        return {
            "phase": phase, "podIP": runtime.ip, "podIPs": [{"ip": runtime.ip}], "hostIP": "127.0.0.1",
            "startTime": runtime.started, "containerStatuses": statuses,
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "True"},
                           {"type": "ContainersReady", "status": flag}, {"type": "Ready", "status": flag}],
        }

    async def _write_status(self, runtime: PodRuntime, pod: dict[str, Any]) -> None:
        status = self._status(runtime)
        if status != runtime.last_status or status != pod.get("status"):
            await self.cluster.write_status("v1/pods", runtime.namespace, runtime.name, status)
            runtime.last_status = status

    # -- stop ------------------------------------------------------------------------------------
    async def _terminate(self, runtime: PodRuntime, pod: dict[str, Any]) -> None:
        now = time.monotonic()
        if runtime.stop_deadline is None:
            grace = float(pod["metadata"].get("deletionGracePeriodSeconds", runtime.grace))
            runtime.stop_deadline = now + grace
            for container in runtime.containers:
                container.ready = False
                if container.alive():
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(container.popen.pid, signal.SIGTERM)
        if any(c.alive() for c in runtime.containers) and now < runtime.stop_deadline:
            return
        self._kill(runtime)
        await self.cluster.delete_now("v1/pods", runtime.namespace, runtime.name)
        self._forget(runtime)

    def _kill(self, runtime: PodRuntime) -> None:
        for container in runtime.containers:
            if container.popen is not None:
                kill_group(container.popen)
                self.cluster.processes.discard(container.popen)

    def _forget(self, runtime: PodRuntime) -> None:
        self.pods.pop(runtime.uid, None)
        self.pool.release(runtime.ip)
        if self.network is not None:
            self.network.release(runtime.uid)
        shutil.rmtree(runtime.root / "volumes", ignore_errors=True)

    def stop_all(self) -> None:
        for runtime in list(self.pods.values()):
            self._kill(runtime)


def kill_group(popen: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group (a container's children go with it) and reap the leader."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(5)
