"""Services: a ClusterIP each (a loopback address), EndpointSlices from ready pods, and a TCP
proxy on ``clusterIP:port`` that forwards each connection to a ready endpoint, round-robin (what
the API server's IP allocator, the EndpointSlice controller and kube-proxy do in a cluster)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Mapping
from typing import Any

from tests.support.cluster.addresses import AddressPool
from tests.support.cluster.controllers import is_ready, is_terminating, owner_ref
from tests.support.cluster.network import NetworkController, ServiceRule
from tests.support.kube.selectors import match_label_selector

log = logging.getLogger("tests.cluster.services")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def selector_string(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def target_port(pod: Mapping[str, Any], port: Mapping[str, Any]) -> int | None:
    target = port.get("targetPort", port["port"])
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for container in pod["spec"].get("containers") or []:
        for p in container.get("ports") or []:
            if p.get("name") == target:
                return int(p["containerPort"])
    return None


def selected_pods(service: Mapping[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    selector = (service.get("spec") or {}).get("selector")
    if not selector:
        return []
    ns = service["metadata"]["namespace"]
    return [p for p in pods if p["metadata"]["namespace"] == ns and (p.get("status") or {}).get("podIP")
            and match_label_selector(p["metadata"].get("labels") or {}, selector_string(selector))]


def build_endpoint_slice(service: Mapping[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any]:
    name = service["metadata"]["name"]
    ports = service["spec"].get("ports") or []
    first = pods[0] if pods else None
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{name}-emulated", "namespace": service["metadata"]["namespace"],
                     "labels": {SERVICE_NAME_LABEL: name,
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                     "ownerReferences": [owner_ref(service)]},
        "addressType": "IPv4",
        "ports": [{"name": p.get("name", ""), "protocol": p.get("protocol", "TCP"),
                   "port": target_port(first, p) if first else p["port"]} for p in ports],
        "endpoints": [
            {"addresses": [p["status"]["podIP"]],
             "conditions": {"ready": is_ready(p) and not is_terminating(p), "serving": is_ready(p),
                            "terminating": is_terminating(p)},
             "targetRef": {"kind": "Pod", "name": p["metadata"]["name"], "namespace": p["metadata"]["namespace"],
                           "uid": p["metadata"]["uid"]}}
            for p in sorted(pods, key=lambda p: p["metadata"]["name"])
        ],
    }


def ready_endpoints(service: Mapping[str, Any], pods: list[dict[str, Any]], port: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(podIP, targetPort) of the Service's ready, not terminating pods, sorted."""
    found = [(p["status"]["podIP"], target_port(p, port)) for p in selected_pods(service, pods)
             if is_ready(p) and not is_terminating(p)]
    return sorted((ip, number) for ip, number in found if number)


class ServiceProxy:
    """kube-proxy for one Service port: accepts on clusterIP:port, forwards to a ready pod."""

    def __init__(self, cluster: Any, namespace: str, name: str, port: dict[str, Any]) -> None:
        self.cluster, self.namespace, self.name, self.port = cluster, namespace, name, port
        self.server: asyncio.base_events.Server | None = None
        self._turn = itertools.count()

    async def start(self, address: str) -> None:
        self.server = await asyncio.start_server(self._connect, address, int(self.port["port"]), reuse_address=True)

    def _endpoints(self) -> list[tuple[str, int]]:
        service = self.cluster.read("v1/services", self.namespace, self.name)
        if service is None:
            return []
        return ready_endpoints(service, self.cluster.read_all("v1/pods", self.namespace), self.port)

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        endpoints = self._endpoints()
        if not endpoints:
            writer.close()  # no ready endpoint: the connection is refused, as with kube-proxy
            return
        ip, port = endpoints[next(self._turn) % len(endpoints)]
        try:
            up_reader, up_writer = await asyncio.open_connection(ip, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class ServiceController:
    """ClusterIPs, EndpointSlices and, for every Service port, either kernel DNAT rules (with a
    ``network``: see network.py) or a user-space proxy; ``tick()`` is one pass."""

    def __init__(self, cluster: Any, pool: AddressPool, network: NetworkController | None = None) -> None:
        self.cluster, self.pool, self.network = cluster, pool, network
        self.proxies: dict[tuple[str, str, int], ServiceProxy] = {}

    async def tick(self) -> None:
        services = self.cluster.read_all("v1/services")
        pods = self.cluster.read_all("v1/pods")
        wanted: set[tuple[str, str, int]] = set()
        rules: list[ServiceRule] = []
        for service in services:
            ns, name = service["metadata"]["namespace"], service["metadata"]["name"]
            address = service["spec"].get("clusterIP")
            if not address or address == "None":
                if address == "None":
                    continue
                address = self.pool.take(int(p["port"]) for p in service["spec"].get("ports") or [])
                await self.cluster.write("v1/services", ns, name, {"spec": {"clusterIP": address, "clusterIPs": [address]}})
            for port in service["spec"].get("ports") or []:
                if self.network is not None:
                    rules.append(ServiceRule(address, int(port["port"]), tuple(ready_endpoints(service, pods, port))))
                    continue
                key = (ns, name, int(port["port"]))
                wanted.add(key)
                if key not in self.proxies:
                    proxy = ServiceProxy(self.cluster, ns, name, port)
                    try:
                        await proxy.start(address)
                    except OSError as exc:
                        log.warning("service %s/%s: cannot listen on %s:%s: %s", ns, name, address, port["port"], exc)
                        continue
                    self.proxies[key] = proxy
            await self._sync_slice(service, selected_pods(service, pods))
        for key in set(self.proxies) - wanted:
            await self.proxies.pop(key).stop()
        if self.network is not None:
            self.network.apply(rules)

    async def _sync_slice(self, service: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        if not (service.get("spec") or {}).get("selector"):
            return
        desired = build_endpoint_slice(service, pods)
        ns, name = desired["metadata"]["namespace"], desired["metadata"]["name"]
        live = self.cluster.read("discovery.k8s.io/v1/endpointslices", ns, name)
        if live is None:
            await self.cluster.create(desired)
        elif any(live.get(k) != desired[k] for k in ("ports", "endpoints")):
            await self.cluster.write("discovery.k8s.io/v1/endpointslices", ns, name,
                                     {"ports": desired["ports"], "endpoints": desired["endpoints"]})

    async def stop(self) -> None:
        for proxy in self.proxies.values():
            await proxy.stop()
        self.proxies.clear()
