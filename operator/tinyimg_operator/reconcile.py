"""One level-based reconcile of an ImageModel: validate, plan its rollout, apply children, report status.

Safe to run any number of times: with nothing changed it reads and writes nothing new. With an
HTTP client (the rollout timer), it also reads the model pods' /status: the counters a canary step
is judged on and the config generation each pod runs (``status.pods``).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tinyimg.core import labels
from tinyimg.core.status import ImageModelStatus
from tinyimg.core.tracing import current_context, record_span, tracing_on
from tinyimg_operator.applier import apply_object, apply_status, delete_object, object_path, path_of
from tinyimg_operator.autoscaling import read_state
from tinyimg_operator.children import build_canary_children, build_children
from tinyimg_operator.deployment import SURGE, build_strategy
from tinyimg_operator.imagemodel import InvalidSpecError, check_policy, read_model_spec
from tinyimg_operator.kubeapi import KubeApi
from tinyimg_operator.objects import canary_name, configmap_name
from tinyimg_operator.pods import PodProblem, find_pod_problem, read_pods
from tinyimg_operator.preload import (
    apply_preload,
    build_cache_status,
    build_preload_job,
    preload_job_name,
    read_job_pods,
)
from tinyimg_operator.revisions import is_canary, observe_revisions
from tinyimg_operator.rollout import CANARY, PROMOTING, plan_rollout, summarize
from tinyimg_operator.settings import BuildSettings
from tinyimg_operator.status import build_invalid_status, build_rollout_conditions, build_status

# (the ImageModel body, type, reason, message): an Event to post (handlers: kopf.event).
EventSink = Callable[[dict[str, Any], str, str, str], None]


@dataclass
class Outcome:
    changes: dict[str, str]  # "Kind/name" -> created | patched | unchanged | deleted
    status_written: bool
    events: list[tuple[str, str, str]] = field(default_factory=list)


def utc_now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reconcile_imagemodel(api: KubeApi, settings: BuildSettings, body: dict[str, Any],
                         http: httpx.Client | None = None, on_event: EventSink | None = None,
                         traced: bool = True) -> Outcome:
    """Raises InvalidSpecError (after writing the Degraded status) or applier.KubeApiError.

    With tracing on, a ``reconcile`` span (under the caller's current span: an autoscaler decision's)
    says what changed. ``traced=False`` (the rollout loop's periodic pass) records it only when
    something changed or it failed, so an idle cluster does not send a trace every few seconds."""
    started, error, outcome = time.time_ns(), None, None
    try:
        outcome = _reconcile(api, settings, body, http, on_event)
        return outcome
    except Exception as err:
        error = f"{type(err).__name__}: {err}"
        raise
    finally:
        changed = [f"{kind}={how}" for kind, how in (outcome.changes.items() if outcome else ()) if how != "unchanged"]
        if tracing_on() and (traced or changed or error):
            meta = body["metadata"]
            record_span("reconcile", current_context(), started, time.time_ns(), {
                "k8s.namespace.name": meta["namespace"], "tinyimg.model": meta["name"],
                "tinyimg.generation": int(meta.get("generation") or 0), "tinyimg.changes": changed}, error=error)


def _reconcile(api: KubeApi, settings: BuildSettings, body: dict[str, Any],
               http: httpx.Client | None, on_event: EventSink | None) -> Outcome:
    meta = body["metadata"]
    name, namespace, generation = meta["name"], meta["namespace"], meta.get("generation")
    try:
        spec = read_model_spec(body)
        check_policy(spec, settings)
    except InvalidSpecError as err:
        status = build_invalid_status(
            name, namespace, generation, err.field, err.message, body.get("status"), utc_now(), err.reason
        )
        apply_status(api, body, status)
        raise
    if spec.autoscaling.enabled and settings.builtin_autoscaler:
        # The autoscaler's last decision (status.autoscaling) is the Deployment's replicas, not spec.replicas.
        replicas = read_state(body.get("status"), spec.replicas, spec.autoscaling).replicas
        spec = spec.model_copy(update={"replicas": replicas})
    previous = ImageModelStatus.parse(body.get("status"))
    main_path = object_path("apps/v1", "Deployment", namespace, name)
    pods = read_pods(api, namespace, name) or []
    candidate = next((r.name for r in previous.revisions or [] if r.phase in (CANARY, PROMOTING)), None)
    seen, pod_entries = observe_revisions(pods, name, api.get(main_path) if candidate else None, candidate, http)
    now = datetime.datetime.now(tz=datetime.UTC).replace(microsecond=0)
    plan = plan_rollout(spec, previous.revisions, seen, now)

    changes: dict[str, str] = {}
    deployment: dict[str, Any] | None = None
    for desired in build_children(spec, namespace, settings, owner=body):
        if not plan.apply_main and desired["kind"] in ("Deployment", "ConfigMap"):
            continue  # the running revision's: left as they are while another revision is tried
        what, live = apply_object(api, desired)
        changes[f"{desired['kind']}/{desired['metadata']['name']}"] = what
        if desired["kind"] == "Deployment":
            deployment = live
    if deployment is None:
        deployment = api.get(main_path)
    if plan.canary:
        for desired in build_canary_children(spec, namespace, settings, owner=body):
            what, _ = apply_object(api, desired)
            changes[f"{desired['kind']}/{desired['metadata']['name']}"] = what
    else:
        for api_version, kind, child in (("apps/v1", "Deployment", canary_name(name)),
                                         ("v1", "ConfigMap", configmap_name(canary_name(name)))):
            if delete_object(api, api_version, kind, namespace, child):
                changes[f"{kind}/{child}"] = "deleted"
    # The loader fills the cache for the weights the model's Deployment runs: left as it is while a canary tries others.
    job_path = object_path("batch/v1", "Job", namespace, preload_job_name(name))
    loader = build_preload_job(spec, namespace, settings.for_namespace(namespace), owner=body)
    job_change, job = apply_preload(api, loader, namespace, name) if plan.apply_main else (None, api.get(job_path))
    if job_change is not None:
        changes[f"Job/{preload_job_name(name)}"] = job_change
    main_pods = [p for p in pods if not is_canary(p)]
    problem = find_pod_problem(main_pods) if spec.replicas > 0 else None
    if problem is not None and problem.reason == "PodUnschedulable" and build_strategy(spec) == SURGE:
        problem = PodProblem(problem.reason, problem.message + " (rollout strategy surge: the new pod needs a free GPU "
                                                               "while the old one still serves)")
    status = build_status(name, namespace, generation, spec.replicas, deployment, body.get("status"), utc_now(), problem)
    status["conditions"] = build_rollout_conditions(status["conditions"], plan, previous, utc_now())
    status["revisions"] = [r.to_wire() for r in plan.revisions]
    status["rollout"] = summarize(plan.revisions)
    if pod_entries is not None and (pod_entries or previous.pods):
        status["pods"] = [p.to_wire() for p in pod_entries]
        measured = next((p.acceleration for p in pod_entries if p.ready and p.acceleration), None)
        if measured is not None:
            status["acceleration"] = measured.to_wire()
    cache = build_cache_status(job, read_job_pods(api, namespace, preload_job_name(name)) if job else [])
    if cache is not None or previous.cache is not None:
        status["cache"] = cache
    written = apply_status(api, body, status)
    for kind, reason, message in plan.events:
        if on_event is not None:
            on_event(body, kind, reason, message)
    return Outcome(changes, written, plan.events)


def read_imagemodel(api: KubeApi, namespace: str, name: str) -> dict[str, Any] | None:
    probe = {"apiVersion": f"{labels.GROUP}/{labels.VERSION}", "kind": labels.KIND,
             "metadata": {"namespace": namespace, "name": name}}
    return api.get(path_of(probe))
