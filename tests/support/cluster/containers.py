"""How the process kubelet turns a Pod's container into a local process (pure: no I/O here).

A container here is a process group on this machine. Four mappings make a pod template written
for a cluster run unchanged; they are the only liberties taken, and each is applied the same way
everywhere:

1. **Images → executables.** An image is not pulled; its command is looked up among the
   programs of this checkout's virtualenv (:data:`EXECUTABLES`: ``tinyimg``, ``tinyimg-operator``,
   ``kopf``, ``python``). A container without ``command`` runs its image's entrypoint, known
   by image name (:data:`ENTRYPOINTS`, the same as the Dockerfiles': the server image runs
   ``tinyimg serve --config /etc/tinyimg/config.yaml --host 0.0.0.0 --port 8000``, the operator
   image ``tinyimg-operator run``). Anything else cannot run: :class:`CannotRun`, which the
   kubelet reports on the Pod (phase Failed, with the message), as a kubelet reports a bad image.
2. **Filesystem.** Every volume is a directory under the pod's own directory, and a container
   path under a ``mountPath`` M is ``<pod dir>/root<M>/...``: the kubelet rewrites every
   command/args word and env value that is such a path (whole, or after ``=``), and, in the text
   of mounted ConfigMap/Secret files, such paths under ConfigMap/Secret mounts (a config file
   naming a mounted secret's path, or a claim's; not emptyDir paths such as /tmp, which a host path shares). ConfigMap and
   Secret volumes are their keys as files (``items`` honoured); ``emptyDir`` and
   ``persistentVolumeClaim`` are empty directories (a claim's directory lives as long as the node).
   The ``terminationMessagePath`` is an empty file per container run, mounted the same way; its
   content is the termination message (else the log's tail, under ``FallbackToLogsOnError``).
3. **Network.** Each pod has its own loopback address (its ``status.podIP``); the wildcard
   address ``0.0.0.0`` in command/args, env values and mounted ConfigMap/Secret files means that
   address, so every server listens on its real container port (8000) without colliding.
4. **Service names.** There is no DNS: a Service's name as the host of a URL (``redis://name:6379``)
   in command/args, env values and mounted ConfigMap/Secret files becomes its ClusterIP (the
   names the cluster's DNS would answer: ``name``, ``name.ns``, ``name.ns.svc[.cluster.local]``).
   Besides this checkout's programs, :data:`SYSTEM_EXECUTABLES` (``redis-server``) run from this
   machine. Readiness probes are ``httpGet`` or ``tcpSocket``.

Credentials: ``KUBECONFIG`` points at a kubeconfig the kubelet writes per pod, whose token names
the pod's ServiceAccount (the in-cluster token path is not used: there is no
``KUBERNETES_SERVICE_HOST``). Env ``valueFrom`` supports ``configMapKeyRef``, ``secretKeyRef``
(``optional`` honoured) and ``fieldRef`` (``metadata.name``, ``metadata.namespace``,
``metadata.uid``, ``status.podIP``, ``spec.nodeName``, ``spec.serviceAccountName``);
``$(VAR)`` in command/args expands from the container's env, as in Kubernetes.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXECUTABLES = ("tinyimg", "tinyimg-operator", "kopf", "python")
# Programs of this machine (Debian packages) an image may run: the chart's Redis runs redis-server.
SYSTEM_EXECUTABLES = ("redis-server",)
ENTRYPOINTS: dict[str, list[str]] = {
    "tinyimg-server": ["tinyimg", "serve", "--config", "/etc/tinyimg/config.yaml", "--host", "0.0.0.0", "--port", "8000"],
    "tinyimg-operator": ["tinyimg-operator", "run"],
}
WILDCARD = "0.0.0.0"
# Python processes of a 2-core machine: one torch thread each, logs unbuffered, no Hub downloads.
BASE_ENV = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "LANG": "C.UTF-8"}


class CannotRun(ValueError):
    """The pod's template cannot run here; the message says why (it ends up on the Pod)."""


@dataclass
class VolumePlan:
    name: str
    files: dict[str, bytes] = field(default_factory=dict)  # relative path → content (ConfigMap/Secret)
    persistent_key: str | None = None  # a claim's directory, kept across pods


@dataclass
class ContainerPlan:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int | None  # the readiness probe's port, resolved
    probe_path: str | None
    probe_period: float
    probe_initial_delay: float
    logs_on_error: bool = False  # terminationMessagePolicy: FallbackToLogsOnError
    startup_path: str | None = None  # the startupProbe's httpGet path (its port is the readiness probe's)
    startup_failures: int = 0  # its failureThreshold: that many failures in a row and the container is killed
    message_file: Path | None = None  # where its terminationMessagePath lies on this machine
    probe_tcp: bool = False  # a tcpSocket readiness probe: a connection to ``port`` is ready


@dataclass
class PodPlan:
    volumes: list[VolumePlan]
    containers: list[ContainerPlan]
    grace_seconds: float


Lookup = Callable[[str, str], dict[str, Any] | None]  # (resource, name) → object in the pod's namespace


def image_name(image: str) -> str:
    """``ghcr.io/x/tinyimg-server:0.1.0@sha256:...`` → ``tinyimg-server``."""
    return image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]


def container_argv(container: Mapping[str, Any]) -> list[str]:
    command, args = container.get("command"), container.get("args")
    if not command:
        entry = ENTRYPOINTS.get(image_name(container.get("image", "")))
        if entry is None:
            raise CannotRun(f"image {container.get('image')!r} has no known entrypoint and the container gives no command")
        # An image's CMD is replaced by args; the operator image has only an ENTRYPOINT.
        command = entry if not args else (entry[:2] if image_name(container["image"]) == "tinyimg-server" else entry)
    argv = [*command, *(args or [])]
    if argv[0] not in EXECUTABLES + SYSTEM_EXECUTABLES:
        known = ", ".join(EXECUTABLES + SYSTEM_EXECUTABLES)
        raise CannotRun(f"executable {argv[0]!r} is not in this image (known: {known})")
    return argv


def _decode(data: Mapping[str, str] | None, binary: bool) -> dict[str, bytes]:
    return {k: base64.b64decode(v) if binary else v.encode() for k, v in (data or {}).items()}


def volume_plan(volume: Mapping[str, Any], lookup: Lookup, namespace: str) -> VolumePlan:
    name = volume["name"]
    if "emptyDir" in volume:
        return VolumePlan(name)
    if "persistentVolumeClaim" in volume:
        return VolumePlan(name, persistent_key=f"{namespace}/{volume['persistentVolumeClaim']['claimName']}")
    for kind, resource, ref_key in (("configMap", "configmaps", "name"), ("secret", "secrets", "secretName")):
        if kind not in volume:
            continue
        source = volume[kind]
        obj = lookup(resource, source.get(ref_key, ""))
        if obj is None:
            if source.get("optional"):
                return VolumePlan(name)
            raise CannotRun(f'{kind} "{source.get(ref_key)}" not found for volume "{name}"')
        files = _decode(obj.get("data"), binary=kind == "secret") | _decode(obj.get("binaryData"), binary=True)
        if source.get("items"):
            missing = [i["key"] for i in source["items"] if i["key"] not in files]
            if missing and not source.get("optional"):
                raise CannotRun(f'{kind} "{source.get(ref_key)}" has no key {missing[0]!r} (volume "{name}")')
            files = {i["path"]: files[i["key"]] for i in source["items"] if i["key"] in files}
        return VolumePlan(name, files=files)
    raise CannotRun(f'volume "{name}" has a source this kubelet does not provide ({", ".join(sorted(set(volume) - {"name"}))})')


def field_ref(pod: Mapping[str, Any], path: str, pod_ip: str) -> str:
    values = {
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": pod["metadata"]["namespace"],
        "metadata.uid": pod["metadata"].get("uid", ""),
        "status.podIP": pod_ip,
        "spec.nodeName": pod.get("spec", {}).get("nodeName", ""),
        "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName", "default"),
    }
    if path not in values:
        raise CannotRun(f"fieldRef {path!r} is not supported")
    return values[path]


def env_value(item: Mapping[str, Any], pod: Mapping[str, Any], pod_ip: str, lookup: Lookup) -> str | None:
    if "value" in item:
        return str(item["value"])
    source = item.get("valueFrom") or {}
    if "fieldRef" in source:
        return field_ref(pod, source["fieldRef"]["fieldPath"], pod_ip)
    for kind, resource in (("configMapKeyRef", "configmaps"), ("secretKeyRef", "secrets")):
        if kind in source:
            ref = source[kind]
            obj = lookup(resource, ref.get("name", ""))
            data = _decode((obj or {}).get("data"), binary=resource == "secrets")
            if ref["key"] in data:
                return data[ref["key"]].decode()
            if ref.get("optional"):
                return None
            raise CannotRun(f'{kind} {ref.get("name")}/{ref["key"]} not found for env {item["name"]}')
    if not source:
        return ""
    raise CannotRun(f"env {item['name']}: valueFrom {sorted(source)} is not supported")


def expand(word: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion (``$$`` escapes; unknown references stay as written)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), word)


def service_hosts(services: list[Mapping[str, Any]], namespace: str) -> dict[str, str]:
    """Mapping 4's table: each Service's DNS names (``name`` in its own namespace, ``name.ns``,
    ``name.ns.svc``, ``name.ns.svc.cluster.local``) → its ClusterIP."""
    hosts: dict[str, str] = {}
    for service in services:
        ip, name, ns = (service.get("spec") or {}).get("clusterIP"), service["metadata"]["name"], service["metadata"]["namespace"]
        if not ip or ip == "None":
            continue
        for host in (f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local", *([name] if ns == namespace else [])):
            hosts[host] = ip
    return hosts


def rewrite_hosts(text: str, hosts: Mapping[str, str]) -> str:
    """Mapping 4 (no DNS here): a Service's name as the host of a URL (``redis://name:6379``)
    becomes its ClusterIP."""
    if not hosts:
        return text
    pattern = "|".join(re.escape(h) for h in sorted(hosts, key=len, reverse=True))
    return re.sub(rf"(?<=//)({pattern})(?=[:/?\s\"',]|$)", lambda m: hosts[m.group(1)], text)


def rewrite(word: str, mounts: Mapping[str, Path], pod_ip: str, hosts: Mapping[str, str] | None = None) -> str:
    """Mapping 2 (paths under a mountPath), 3 (the wildcard address) and 4 (Service names in URLs)
    on one word, in one pass (a mapped path is never mapped again, even when it lies under another
    mount's path)."""
    word = rewrite_hosts(word.replace(WILDCARD, pod_ip), hosts or {})
    if not mounts:
        return word
    prefixes = sorted((m.rstrip("/") or "/" for m in mounts), key=len, reverse=True)
    hosts = {m.rstrip("/") or "/": d for m, d in mounts.items()}
    pattern = "|".join(re.escape(p) for p in prefixes)
    return re.sub(rf"(^|=)({pattern})(?=/|$)", lambda m: m.group(1) + str(hosts[m.group(2)]), word, count=1)


def rewrite_text(text: bytes, mounts: Mapping[str, Path], pod_ip: str, hosts: Mapping[str, str] | None = None) -> bytes:
    """Mappings 2, 3 and 4 in a mounted file's text: the wildcard address, Service names in URLs,
    and every path under a mountPath that stands as a value (after whitespace, a quote, ``=`` or
    ``:``). Binary files only get mapping 3."""
    text = text.replace(WILDCARD.encode(), pod_ip.encode())
    try:
        decoded = rewrite_hosts(text.decode(), hosts or {})
    except UnicodeDecodeError:
        return text
    text = decoded.encode()
    if not mounts:
        return text
    prefixes = sorted((m.rstrip("/") for m in mounts if m.rstrip("/")), key=len, reverse=True)
    hosts = {m.rstrip("/"): d for m, d in mounts.items()}
    pattern = "|".join(re.escape(p) for p in prefixes)
    mapped = re.sub(rf"(?<=[\s\"'=:])({pattern})(?=/|[\s\"',]|$)", lambda m: str(hosts[m.group(1)]), decoded)
    return mapped.encode()


def pod_mounts(pod: Mapping[str, Any], pod_root: Path) -> dict[str, Path]:
    """The mountPath of every ConfigMap, Secret or PersistentVolumeClaim volume → the host
    directory it maps to (a config file naming a claim's path, such as a result directory,
    means the claim's directory, which other pods share)."""
    spec = pod.get("spec") or {}
    files = {v["name"] for v in spec.get("volumes") or [] if "configMap" in v or "secret" in v or "persistentVolumeClaim" in v}
    return {mount["mountPath"]: pod_root / "root" / mount["mountPath"].lstrip("/")
            for container in spec.get("containers") or [] for mount in container.get("volumeMounts") or []
            if mount["name"] in files}


def probe_port(container: Mapping[str, Any], port: Any) -> int:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise CannotRun(f'container "{container["name"]}" has no port named {port!r}')


def pod_plan(pod: Mapping[str, Any], pod_ip: str, pod_root: Path, lookup: Lookup, base_env: Mapping[str, str],
             hosts: Mapping[str, str] | None = None) -> PodPlan:
    """Everything needed to start the pod's containers, or :class:`CannotRun`. ``hosts``: Service
    names → ClusterIPs (mapping 4)."""
    spec = pod.get("spec") or {}
    namespace = pod["metadata"]["namespace"]
    volumes = {v["name"]: volume_plan(v, lookup, namespace) for v in spec.get("volumes") or []}
    containers = []
    for container in spec.get("containers") or []:
        mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts") or []:
            if mount["name"] not in volumes:
                raise CannotRun(f'container "{container["name"]}" mounts volume "{mount["name"]}", which the pod does not declare')
            mounts[mount["mountPath"]] = pod_root / "root" / mount["mountPath"].lstrip("/")
        # A kubelet mounts a file of its own at terminationMessagePath, one per container.
        message_file = pod_root / "termination" / container["name"]
        mounts[container.get("terminationMessagePath") or "/dev/termination-log"] = message_file
        env: dict[str, str] = dict(base_env) | BASE_ENV
        for item in container.get("env") or []:
            value = env_value(item, pod, pod_ip, lookup)
            if value is not None:
                env[item["name"]] = rewrite(expand(value, env), mounts, pod_ip, hosts)
        argv = [rewrite(expand(word, env), mounts, pod_ip, hosts) for word in container_argv(container)]
        probe = container.get("readinessProbe") or {}
        http = probe.get("httpGet")
        tcp = probe.get("tcpSocket")
        startup = (container.get("startupProbe") or {}).get("httpGet")
        containers.append(ContainerPlan(
            name=container["name"], argv=argv, env=env,
            port=probe_port(container, (http or tcp)["port"]) if http or tcp else None,
            probe_path=http.get("path", "/") if http else None,
            probe_period=float(probe.get("periodSeconds", 10)),
            probe_initial_delay=float(probe.get("initialDelaySeconds", 0)),
            logs_on_error=container.get("terminationMessagePolicy") == "FallbackToLogsOnError",
            startup_path=startup.get("path", "/") if startup and http else None,
            startup_failures=int((container.get("startupProbe") or {}).get("failureThreshold", 3)),
            message_file=message_file,
            probe_tcp=tcp is not None and http is None,
        ))
    if not containers:
        raise CannotRun("the pod has no containers")
    return PodPlan(list(volumes.values()), containers, float(spec.get("terminationGracePeriodSeconds", 30)))


def mount_dirs(pod: Mapping[str, Any], pod_root: Path) -> dict[str, list[Path]]:
    """volume name → the host directories its mounts map to (one per mounting container)."""
    result: dict[str, list[Path]] = {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        for mount in container.get("volumeMounts") or []:
            result.setdefault(mount["name"], []).append(pod_root / "root" / mount["mountPath"].lstrip("/"))
    return result
