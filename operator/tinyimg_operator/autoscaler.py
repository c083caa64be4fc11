"""The autoscaler's I/O: read the load of one ImageModel's pods, decide (``autoscaling.decide``),
record the decision in its status, and apply the replicas through its Deployment.

One kopf daemon per ImageModel with ``autoscaling.enabled`` (see ``handlers.autoscale``): kopf
starts and stops it with the resource and with the switch, each model gets its own period and
failures stay per model; a single loop over all models would need its own bookkeeping of which
models exist. The load is read from the model pods' own ``/status`` (queued + in-flight), plus the
router's demand annotation for requests held while the model has no ready pod.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from opentelemetry import context as otel_context
from opentelemetry.trace import Span

from tinyimg.core import labels
from tinyimg.core.tracing import record_span, set_span_in_context, span
from tinyimg.kube.errors import KubeApiError
from tinyimg.kube.objects import build_pod_url, is_pod_ready
from tinyimg_operator.applier import apply_status
from tinyimg_operator.autoscaling import (
    Decision,
    LoadWindow,
    Observation,
    build_autoscaling_status,
    decide,
    measure_cold_start,
    read_state,
)
from tinyimg_operator.imagemodel import InvalidSpecError, read_model_spec
from tinyimg_operator.kubeapi import KubeApi
from tinyimg_operator.locks import ModelLocks
from tinyimg_operator.reconcile import read_imagemodel, reconcile_imagemodel
from tinyimg_operator.settings import BuildSettings


@dataclass(frozen=True)
class AutoscalerSettings:
    interval_seconds: float = 5.0  # one reading and decision per model this often
    window_seconds: float = 30.0  # the moving window the load is averaged over
    status_timeout_seconds: float = 2.0  # a pod slower than this to answer /status is unreadable


def load_autoscaler_settings(environ: Mapping[str, str] | None = None) -> AutoscalerSettings:
    """TINYIMG_AUTOSCALE_INTERVAL_SECONDS, TINYIMG_AUTOSCALE_WINDOW_SECONDS (short in tests)."""
    env = os.environ if environ is None else environ
    interval = float(env.get("TINYIMG_AUTOSCALE_INTERVAL_SECONDS") or 5.0)
    window = float(env.get("TINYIMG_AUTOSCALE_WINDOW_SECONDS") or 30.0)
    if interval <= 0 or window <= 0:
        raise ValueError("TINYIMG_AUTOSCALE_INTERVAL_SECONDS and TINYIMG_AUTOSCALE_WINDOW_SECONDS must be positive")
    return AutoscalerSettings(interval_seconds=interval, window_seconds=window)


def sum_pod_load(documents: list[dict[str, Any]], model: str) -> float:
    """Queued + in-flight requests of ``model`` over the pods' /status documents."""
    total = 0.0
    for doc in documents:
        entry = (doc.get("models") or {}).get(model) or {}
        total += float(entry.get("queue_depth") or 0) + float(entry.get("in_flight") or 0)
    return total


def read_observation(api: KubeApi, http: httpx.Client, namespace: str, model: str, replicas: int,
                     demand_token: str | None, timeout: float) -> Observation:
    """The model's load now. With 0 replicas there is nothing to read and no load but the router's
    demand; with replicas and no pod that answers, the reading is blind (None) and says why. Pods
    that do not answer count as loaded like those that do."""
    listing = api.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={labels.MODEL}%3D{model}") or {}
    pods = [p for p in listing.get("items") or [] if (p.get("metadata", {}).get("labels") or {}).get(labels.MODEL) == model]
    ready = [url for p in pods if is_pod_ready(p) and (url := build_pod_url(p))]
    cold_start = measure_cold_start([p for p in pods if is_pod_ready(p)])
    if replicas == 0 and not ready:
        return Observation(load=0.0, demand_token=demand_token)
    if not ready:
        return Observation(None, f"no ready pod to read ({len(pods)} starting or failing)", demand_token)
    documents, errors = [], []
    for url in ready:
        try:
            response = http.get(url + "/status", timeout=timeout)
            response.raise_for_status()
            documents.append(response.json())
        except (httpx.HTTPError, ValueError) as err:
            errors.append(f"{url}: {type(err).__name__}")
    if not documents:
        return Observation(None, f"no pod answered /status ({'; '.join(errors)})", demand_token, cold_start)
    return Observation(sum_pod_load(documents, model) * len(ready) / len(documents), demand_token=demand_token,
                       cold_start_seconds=cold_start)


@dataclass
class ScaleTrace:
    """An autoscaler decision's span, kept until the model's ready pods reach its replicas."""

    span: Span
    replicas: int
    decided_ns: int


def build_decision_attributes(namespace: str, name: str, decision: Decision) -> dict[str, Any]:
    """The load reading and the decision, as span attributes. Pure."""
    return {"k8s.namespace.name": namespace, "tinyimg.model": name, "tinyimg.load": decision.load if decision.load is not None else -1.0,
            "tinyimg.replicas.previous": decision.previous, "tinyimg.replicas.desired": decision.replicas,
            "tinyimg.reason": decision.reason, "tinyimg.message": decision.message}


def follow_scale(scaling: ScaleTrace | None, body: dict[str, Any]) -> ScaleTrace | None:
    """Once the ImageModel's ready replicas reach the decision's, a ``pods_ready`` span (from the
    decision to now) goes into the decision's trace: the scale-up's whole path, load reading to
    Ready pod. The ScaleTrace still followed, or None."""
    if scaling is None:
        return None
    ready = int((body.get("status") or {}).get("readyReplicas") or 0)
    if ready != scaling.replicas:
        return scaling
    record_span("pods_ready", set_span_in_context(scaling.span), scaling.decided_ns, time.time_ns(),
                {"tinyimg.replicas.ready": ready})
    return None


def run_tick(api: KubeApi, http: httpx.Client, body: dict[str, Any], window: LoadWindow,
             settings: AutoscalerSettings, now: float | None = None) -> tuple[Decision, dict[str, Any]] | None:
    """One reading and decision for the ImageModel ``body`` (as just read). Writes
    ``status.autoscaling`` when it differs; returns the decision and the status written, or None
    when the spec is invalid or autoscaling is off (the reconcile reports those)."""
    now = time.time() if now is None else now
    meta = body["metadata"]
    spec = read_model_spec(body)
    policy = spec.autoscaling
    if not policy.enabled:
        return None
    state = read_state(body.get("status"), spec.replicas, policy)
    token = (meta.get("annotations") or {}).get(labels.DEMAND_ANNOTATION)
    try:
        seen = read_observation(api, http, meta["namespace"], meta["name"], state.replicas, token,
                                settings.status_timeout_seconds)
    except KubeApiError as err:
        seen = Observation(None, f"cannot list pods: {err}", token)
    if seen.load is None:
        window.clear()  # old samples say nothing about the load after a blind spell
    else:
        seen = Observation(window.add(now, seen.load), demand_token=seen.demand_token,
                           cold_start_seconds=seen.cold_start_seconds)
    decision = decide(policy, state, seen, now, engines_per_pod=spec.resources.gpus or 1)
    status = build_autoscaling_status(decision, body.get("status"), now)
    apply_status(api, body, {"autoscaling": status})
    return decision, status


def run_autoscaler(api: KubeApi, locks: ModelLocks, build: BuildSettings, settings: AutoscalerSettings,
                   namespace: str, name: str, stopped: Any, report: Callable[[dict[str, Any], Decision], None],
                   warn: Callable[[str], None]) -> None:
    """The daemon's loop for one ImageModel until ``stopped`` (kopf's DaemonStopped): a tick, then
    when the replicas change, a reconcile under the model's lock (so the Deployment gets them
    through the one applier) and ``report`` (the Event)."""
    window = LoadWindow(settings.window_seconds)
    scaling: ScaleTrace | None = None  # the last change, traced until its pods are ready
    with httpx.Client() as http:
        while not stopped:
            try:
                body = read_imagemodel(api, namespace, name)
                if body is None:
                    return
                scaling = follow_scale(scaling, body)
                started = time.time_ns()
                result = run_tick(api, http, body, window, settings)
                if result is not None and result[0].changed:
                    decision = result[0]
                    with span("autoscale", build_decision_attributes(namespace, name, decision),
                              parent=otel_context.Context()) as decided:
                        with locks(namespace, name):
                            fresh = read_imagemodel(api, namespace, name)
                            if fresh is not None:
                                reconcile_imagemodel(api, build, fresh)
                        report(body, decision)
                    if decided is not None:
                        scaling = ScaleTrace(decided, decision.replicas, started)
            except InvalidSpecError:
                pass  # reported by the reconcile; nothing to scale
            except KubeApiError as err:
                warn(f"autoscaler for {namespace}/{name}: {err}")
            stopped.wait(settings.interval_seconds)
