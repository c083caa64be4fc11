"""The router's Prometheus metrics, on a registry of its own (several apps live in one test process).

``tinyimg_router_requests_total`` outcomes: ok, upstream_client_error (a 4xx relayed),
upstream_error (a 5xx relayed), aborted (the relay broke after the head was sent), unknown_model,
no_backend, unreachable (every try failed to connect), timeout, unforwardable (a request the HTTP
client refuses to send: 400), forward_failed. ``tinyimg_router_ready_pods`` is set from the table
at each scrape.

Label values are never taken from a request as is: ``model`` is a model the table knows (an
unknown name counts as ``UNKNOWN_MODEL_LABEL``), so no client can grow the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Generation through one hop takes from ~0.1 s (tiny models) to minutes (big models on CPU).
# Not a valid model name (those are lowercase letters, digits and "-"), so it never collides.
UNKNOWN_MODEL_LABEL = "_unknown"
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass
class RouterMetrics:
    registry: CollectorRegistry
    requests: Counter
    upstream_duration: Histogram
    retries: Counter
    ready_pods: Gauge
    scaled_to_zero: Gauge
    rejected: Counter
    waiting: Gauge
    held: Counter
    cold_start_duration: Histogram
    demand_triggers: Counter
    tenant_image_steps: Counter
    tenant_rejected: Counter


def build_router_metrics() -> RouterMetrics:
    registry = CollectorRegistry()
    return RouterMetrics(
        registry=registry,
        requests=Counter(
            "tinyimg_router_requests", "Generation requests by model and outcome", ["model", "outcome"], registry=registry
        ),
        upstream_duration=Histogram(
            "tinyimg_router_upstream_duration_seconds",
            "Time from forwarding a request to the end of the upstream response",
            ["model"],
            buckets=UPSTREAM_BUCKETS,
            registry=registry,
        ),
        retries=Counter("tinyimg_router_retries", "Requests retried on another pod", ["model"], registry=registry),
        ready_pods=Gauge("tinyimg_router_ready_pods", "Ready, reachable pods per model", ["model"], registry=registry),
        # 1 while the autoscaler keeps a model at zero on purpose (idle): no ready pod is then no fault.
        scaled_to_zero=Gauge("tinyimg_router_scaled_to_zero", "1 when the model is scaled to zero while idle",
                             ["model"], registry=registry),
        rejected=Counter("tinyimg_router_rejected", "Requests refused at the edge", ["reason"], registry=registry),
        # Scale from zero (tinyimg.router.coldstart).
        waiting=Gauge("tinyimg_router_waiting_requests", "Requests held for a model with no ready pod",
                      ["model"], registry=registry),
        held=Counter("tinyimg_router_held_requests", "Held requests by how the wait ended (ready, timeout, "
                     "full, disconnected)", ["model", "outcome"], registry=registry),
        cold_start_duration=Histogram("tinyimg_router_cold_start_duration_seconds",
                                      "How long a held request waited for a ready pod", ["model"],
                                      buckets=UPSTREAM_BUCKETS, registry=registry),
        demand_triggers=Counter("tinyimg_router_demand_triggers", "Cold starts asked for (one per cold start, "
                                "shared by its waiting requests)", ["model"], registry=registry),
        # Tenants (a label from the keys file only: tinyimg.router.tenancy).
        tenant_image_steps=Counter("tinyimg_router_tenant_image_steps", "Image-steps of a tenant with a budget, "
                                   "forwarded and accepted by a pod", ["tenant"], registry=registry),
        tenant_rejected=Counter("tinyimg_router_tenant_rejected", "Requests of a tenant refused at the router, by "
                                "reason (image_steps: over its budget)", ["tenant", "reason"], registry=registry),
    )
