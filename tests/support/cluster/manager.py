"""The Deployment, ReplicaSet, StatefulSet and Job controllers (kube-controller-manager's part the chart
needs), level-based: each ``tick()`` reads every object and writes what differs (see ``controllers``)."""

from __future__ import annotations

import secrets
from typing import Any

from tests.support.cluster import controllers as c

DEPLOYMENTS, REPLICASETS, PODS = "apps/v1/deployments", "apps/v1/replicasets", "v1/pods"
STATEFULSETS = "apps/v1/statefulsets"
JOBS = "batch/v1/jobs"


class ControllerManager:
    def __init__(self, cluster: Any, node: str) -> None:
        self.cluster, self.node = cluster, node

    async def tick(self) -> None:
        for deployment in self.cluster.read_all(DEPLOYMENTS):
            if not c.is_terminating(deployment):
                await self._deployment(deployment)
        for replicaset in self.cluster.read_all(REPLICASETS):
            if not c.is_terminating(replicaset):
                await self._replicaset(replicaset)
        for statefulset in self.cluster.read_all(STATEFULSETS):
            if not c.is_terminating(statefulset):
                await self._statefulset(statefulset)
        for job in self.cluster.read_all(JOBS):
            if not c.is_terminating(job):
                await self._job(job)

    async def _job(self, job: dict[str, Any]) -> None:
        """One pod at a time until one succeeds or ``backoffLimit`` failures (failed pods are kept,
        as the Job controller keeps them for their logs)."""
        ns = job["metadata"]["namespace"]
        pods = [p for p in self.cluster.read_all(PODS, ns) if c.owned_by(p, job)]
        status, start_one = c.job_status(job, pods, c.now())
        if start_one:
            await self.cluster.create(c.build_job_pod(job, secrets.token_hex(3)[:5], self.node))
            status["active"] = 1
        if status != job.get("status"):
            await self.cluster.write_status(JOBS, ns, job["metadata"]["name"], status)

    async def _statefulset(self, statefulset: dict[str, Any]) -> None:
        """Pods ``<name>-0`` .. ``<name>-<replicas - 1>``, each made again when it is gone (the
        claims stay, so its data does); the ones past ``replicas`` deleted. No ordered rollout."""
        ns, name = statefulset["metadata"]["namespace"], statefulset["metadata"]["name"]
        want = int(statefulset["spec"].get("replicas", 1))
        pods = {p["metadata"]["name"]: p for p in self.cluster.read_all(PODS, ns) if c.owned_by(p, statefulset)}
        for ordinal in range(want):
            if f"{name}-{ordinal}" not in pods:
                await self.cluster.create(c.build_statefulset_pod(statefulset, ordinal, self.node))
        for pod_name, pod in pods.items():
            if int(pod_name.rsplit("-", 1)[1]) >= want and not c.is_terminating(pod):
                await self.cluster.delete(PODS, ns, pod_name)
        ready = sum(1 for p in pods.values() if c.is_ready(p) and not c.is_terminating(p))
        status = {"replicas": len(pods), "readyReplicas": ready, "availableReplicas": ready, "currentReplicas": len(pods),
                  "updatedReplicas": len(pods), "observedGeneration": statefulset["metadata"].get("generation", 1)}
        if status != statefulset.get("status"):
            await self.cluster.write_status(STATEFULSETS, ns, name, status)

    async def _deployment(self, deployment: dict[str, Any]) -> None:
        ns = deployment["metadata"]["namespace"]
        owned = [rs for rs in self.cluster.read_all(REPLICASETS, ns) if c.owned_by(rs, deployment)]
        pod_hash = c.template_hash(deployment["spec"]["template"])
        new = next((rs for rs in owned if rs["metadata"]["labels"].get(c.HASH_LABEL) == pod_hash), None)
        old = [rs for rs in owned if rs is not new]
        pods = [p for p in self.cluster.read_all(PODS, ns) if any(c.owned_by(p, rs) for rs in owned)]

        def by_rs(predicate) -> dict[str, int]:
            counts: dict[str, int] = {}
            for rs in owned:
                counts[rs["metadata"]["name"]] = sum(1 for p in pods if c.owned_by(p, rs) and predicate(p))
            return counts

        ready = by_rs(lambda p: c.is_ready(p) and not c.is_terminating(p))
        present = by_rs(lambda p: True)
        targets = c.plan_scale(deployment, new, old, ready, present)
        if new is None:
            replicas = targets.pop(None)
            new = await self.cluster.create(c.build_replicaset(deployment, replicas))
        else:
            replicas = targets.pop(new["metadata"]["name"])
            if new["spec"]["replicas"] != replicas:
                await self.cluster.write(REPLICASETS, ns, new["metadata"]["name"], {"spec": {"replicas": replicas}})
        for rs in old:
            name = rs["metadata"]["name"]
            if targets[name] == 0 and present.get(name, 0) == 0:
                await self.cluster.delete(REPLICASETS, ns, name)  # history is not kept
            elif rs["spec"]["replicas"] != targets[name]:
                await self.cluster.write(REPLICASETS, ns, name, {"spec": {"replicas": targets[name]}})
        status = c.deployment_status(deployment, pods, pod_hash)
        if status != deployment.get("status"):
            await self.cluster.write_status(DEPLOYMENTS, ns, deployment["metadata"]["name"], status)

    async def _replicaset(self, replicaset: dict[str, Any]) -> None:
        ns = replicaset["metadata"]["namespace"]
        pods = [p for p in self.cluster.read_all(PODS, ns) if c.owned_by(p, replicaset) and not c.is_terminating(p)]
        want = int(replicaset["spec"].get("replicas", 1))
        for _ in range(want - len(pods)):
            await self.cluster.create(c.build_pod(replicaset, secrets.token_hex(3)[:5], self.node))
        if len(pods) > want:
            # Not-ready pods go first, then the newest (what the ReplicaSet controller prefers).
            newest_first = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True)
            doomed = sorted(newest_first, key=c.is_ready)[: len(pods) - want]
            for pod in doomed:
                await self.cluster.delete(PODS, ns, pod["metadata"]["name"])
        ready = sum(1 for p in pods if c.is_ready(p))
        status = {"replicas": len(pods), "readyReplicas": ready, "availableReplicas": ready,
                  "observedGeneration": replicaset["metadata"].get("generation", 1)}
        if status != replicaset.get("status"):
            await self.cluster.write_status(REPLICASETS, ns, replicaset["metadata"]["name"], status)
