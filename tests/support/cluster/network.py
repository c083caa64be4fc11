"""The cluster network as a CNI and kube-proxy make it: NetworkPolicies and Services enforced by
the kernel's packet filter (nftables), with a pod's identity carried by its processes' cgroup.

Each pod already has its own loopback address (``addresses``); a connection's *source* address on
loopback is 127.0.0.1 whoever opens it, so the source pod is told by the socket's cgroup instead:
the kubelet starts every container of a pod in the pod's own cgroup v2 directory
(``<cgroup2>/tinyimg-<cluster>/<pod uid>``), and the output hook matches ``socket cgroupv2``.

- **Services** (kube-proxy's nftables mode): a connection to ``clusterIP:port`` is DNAT-ed to one
  ready endpoint (``numgen inc``: round robin); with no ready endpoint it is reset. The source's
  socket, and so its identity, is kept, unlike a user-space proxy's.
- **NetworkPolicy** (ingress, ``networking.k8s.io/v1``): a pod selected by a policy with the
  ``Ingress`` type is isolated; a new connection to it from a pod is accepted only when some rule
  of a selecting policy admits that pod (``podSelector``, ``namespaceSelector``, both, or no
  ``from``) on that port (number or named port, ``endPort``); any other pod's is dropped (the client
  times out, as with most CNIs). Traffic from the node itself (the kubelet's probes, the tests'
  own client) is always admitted, as Kubernetes specifies. ``ipBlock`` peers cannot be told apart
  on loopback and admit nothing (logged); egress rules are not enforced.

This needs root, ``nft`` and a writable cgroup v2 hierarchy under ``/sys/fs/cgroup`` (CI has all
three); elsewhere :func:`enforcement_unavailable` says why and the cluster falls back to a
user-space Service proxy with no policy enforcement. The translation is pure (:func:`build_ruleset`);
:class:`NetworkController` is its one applier.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.kube.selectors import label_selector_string, match_label_selector

log = logging.getLogger("tests.cluster.network")
NFT_CGROUP_BASE = Path("/sys/fs/cgroup")  # nft resolves a cgroupv2 path relative to this


@dataclass(frozen=True)
class Identity:
    """A pod as the packet filter sees it."""

    namespace: str
    labels: tuple[tuple[str, str], ...]
    ip: str
    cgroup: str  # relative to NFT_CGROUP_BASE
    ports: tuple[tuple[str, int], ...] = ()  # (name, containerPort) for named ports in policies

    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class ServiceRule:
    cluster_ip: str
    port: int
    endpoints: tuple[tuple[str, int], ...]  # ready (ip, targetPort), sorted


def cgroup2_mount() -> Path | None:
    """The cgroup v2 hierarchy's mount point, if it lies under /sys/fs/cgroup."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                path = Path(parts[1])
                if path == NFT_CGROUP_BASE or NFT_CGROUP_BASE in path.parents:
                    return path
    return None


def enforcement_unavailable() -> str | None:
    """Why NetworkPolicies cannot be enforced on this machine, or None when they can."""
    if os.geteuid() != 0:
        return "not root (nftables and cgroups need it; CI runs as root)"
    if shutil.which("nft") is None:
        return "no `nft` (Debian package nftables; .ci/run installs it)"
    mount = cgroup2_mount()
    if mount is None or not os.access(mount, os.W_OK):
        return "no writable cgroup v2 hierarchy under /sys/fs/cgroup"
    return None


# -- the translation (pure) ------------------------------------------------------------------------
def _selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    return match_label_selector(labels, label_selector_string(selector or {}))


def policy_types(policy: Mapping[str, Any]) -> list[str]:
    spec = policy.get("spec") or {}
    return spec.get("policyTypes") or (["Ingress", "Egress"] if spec.get("egress") else ["Ingress"])


def _peer_admits(peer: Mapping[str, Any], policy_ns: str, source: Identity, namespaces: Mapping[str, Mapping[str, str]]) -> bool:
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        ns_ok = _selects(peer["namespaceSelector"], namespaces.get(source.namespace, {}))
    else:
        ns_ok = source.namespace == policy_ns
    pod_ok = "podSelector" not in peer or _selects(peer["podSelector"], source.label_map())
    return ns_ok and pod_ok


def _ports(rule: Mapping[str, Any], target: Identity) -> list[str] | None:
    """nft port terms for a rule (None: every port)."""
    if not rule.get("ports"):
        return None
    named = dict(target.ports)
    terms = []
    for p in rule["ports"]:
        if (p.get("protocol") or "TCP") != "TCP":
            continue
        port = p.get("port")
        if port is None:
            return None
        number = named.get(port) if isinstance(port, str) and not port.isdigit() else int(port)
        if number is None:
            continue  # a named port this pod does not have admits nothing on it
        terms.append(f"{number}-{p['endPort']}" if p.get("endPort") else str(number))
    return terms


def admitted(target: Identity, pods: Iterable[Identity], policies: Iterable[Mapping[str, Any]],
             namespaces: Mapping[str, Mapping[str, str]]) -> tuple[bool, list[tuple[Identity | None, list[str] | None]]]:
    """(isolated?, [(source pod or None for every pod, ports or None for all)]) for one pod."""
    pods = list(pods)
    isolated, grants = False, []
    for policy in policies:
        meta, spec = policy["metadata"], policy.get("spec") or {}
        if meta.get("namespace") != target.namespace or "Ingress" not in policy_types(policy):
            continue
        if not _selects(spec.get("podSelector"), target.label_map()):
            continue
        isolated = True
        for rule in spec.get("ingress") or []:
            ports = _ports(rule, target)
            if ports == []:
                continue
            peers = rule.get("from")
            if not peers:
                grants.append((None, ports))
                continue
            for peer in peers:
                if "ipBlock" in peer:
                    log.warning("NetworkPolicy %s/%s: ipBlock peers are not enforceable here; they admit nothing",
                                meta.get("namespace"), meta.get("name"))
            grants += [(source, ports) for source in pods
                       if any(_peer_admits(peer, meta["namespace"], source, namespaces) for peer in peers)]
    return isolated, grants


def build_ruleset(table: str, cgroup_root: str, root_level: int, pods: list[Identity], policies: list[Mapping[str, Any]],
                  namespaces: Mapping[str, Mapping[str, str]], services: list[ServiceRule]) -> str:
    """The whole nftables table, as one ``nft -f`` transaction (replaces the previous one).
    ``cgroup_root``: the cluster's cgroup as nft names it (relative to /sys/fs/cgroup); ``root_level``:
    its depth in the cgroup v2 hierarchy (pods are one level below)."""
    nat, filt = [], ["ct state established,related accept"]
    for svc in services:
        if svc.endpoints:
            targets = ", ".join(f"{i} : {ip} . {port}" for i, (ip, port) in enumerate(svc.endpoints))
            nat.append(f"ip daddr {svc.cluster_ip} tcp dport {svc.port} dnat to numgen inc mod {len(svc.endpoints)} map {{ {targets} }}")
        else:
            filt.append(f"ip daddr {svc.cluster_ip} tcp dport {svc.port} reject with tcp reset")
    for target in pods:
        isolated, grants = admitted(target, pods, policies, namespaces)
        if not isolated:
            continue
        for source, ports in grants:
            port_term = f" tcp dport {{ {', '.join(ports)} }}" if ports else ""
            who = f' socket cgroupv2 level {root_level + 1} "{source.cgroup}"' if source else ""
            filt.append(f"ip daddr {target.ip}{port_term}{who} accept")
        filt.append(f'ip daddr {target.ip} socket cgroupv2 level {root_level} "{cgroup_root}" counter drop')
    body = [f"table ip {table} {{",
            "  chain nat_out { type nat hook output priority -100;", *(f"    {r}" for r in nat), "  }",
            "  chain nat_post { type nat hook postrouting priority 100; }",
            "  chain out { type filter hook output priority 0;", *(f"    {r}" for r in filt), "  }",
            "}"]
    return f"table ip {table}\ndelete table ip {table}\n" + "\n".join(body) + "\n"


# -- the applier -----------------------------------------------------------------------------------
class NetworkController:
    """Pod cgroups, and the nftables table for the cluster's addresses, kept in step each tick."""

    def __init__(self, cluster: Any, name: str) -> None:
        self.cluster = cluster
        mount = cgroup2_mount()
        assert mount is not None
        self.table = name.replace(".", "_").replace("-", "_")
        self.root_dir = mount / name
        self.root_dir.mkdir(exist_ok=True)
        self.cgroup_root = str(self.root_dir.relative_to(NFT_CGROUP_BASE))
        self.root_level = len(self.root_dir.relative_to(mount).parts)  # 1: right below the hierarchy's root
        self.extra: dict[str, Identity] = {}  # identities of processes that are not Pods (Prometheus)
        self._applied = ""

    def pod_cgroup(self, uid: str) -> Path:
        path = self.root_dir / uid
        path.mkdir(exist_ok=True)
        return path

    def add_identity(self, key: str, namespace: str, labels: Mapping[str, str]) -> Path:
        """A cgroup standing for a pod in ``namespace`` with ``labels`` (for a process the harness
        starts itself, like Prometheus in its monitoring namespace)."""
        path = self.pod_cgroup(key)
        self.extra[key] = Identity(namespace, tuple(sorted(labels.items())), "", str(path.relative_to(NFT_CGROUP_BASE)))
        return path

    def release(self, uid: str) -> None:
        with contextlib.suppress(OSError):
            (self.root_dir / uid).rmdir()

    def identities(self) -> list[Identity]:
        found = list(self.extra.values())
        for runtime in self.cluster.kubelet.pods.values():
            pod = self.cluster.read("v1/pods", runtime.namespace, runtime.name)
            if pod is None:
                continue
            ports = tuple((p["name"], int(p["containerPort"])) for c in pod["spec"].get("containers") or []
                          for p in c.get("ports") or [] if p.get("name"))
            found.append(Identity(runtime.namespace, tuple(sorted((pod["metadata"].get("labels") or {}).items())), runtime.ip,
                                  str((self.root_dir / runtime.uid).relative_to(NFT_CGROUP_BASE)), ports))
        return found

    def namespaces(self) -> dict[str, dict[str, str]]:
        """Namespace labels, with the ``kubernetes.io/metadata.name`` label the API server sets on each."""
        names = {p["metadata"]["namespace"] for p in self.cluster.read_all("v1/pods")} | {i.namespace for i in self.extra.values()}
        labels = {n: {} for n in names}
        for ns in self.cluster.read_all("v1/namespaces"):
            labels[ns["metadata"]["name"]] = dict(ns["metadata"].get("labels") or {})
        return {n: {**v, "kubernetes.io/metadata.name": n} for n, v in labels.items()}

    def ruleset(self, services: list[ServiceRule]) -> str:
        return build_ruleset(self.table, self.cgroup_root, self.root_level, self.identities(),
                             self.cluster.read_all("networking.k8s.io/v1/networkpolicies"), self.namespaces(), services)

    def apply(self, services: list[ServiceRule]) -> None:
        text = self.ruleset(services)
        if text == self._applied:
            return
        result = subprocess.run(["nft", "-f", "-"], input=text, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"nft refused the ruleset: {result.stderr}\n{text}")
        self._applied = text

    def stop(self) -> None:
        subprocess.run(["nft", "delete", "table", "ip", self.table], capture_output=True, check=False)
        for child in self.root_dir.glob("*"):
            with contextlib.suppress(OSError):
                child.rmdir()
        with contextlib.suppress(OSError):
            self.root_dir.rmdir()


def enter_cgroup(path: Path) -> None:
    """For ``preexec_fn``: move the new process (before exec) into ``path``."""
    (path / "cgroup.procs").write_text(str(os.getpid()))
