"""``/metrics`` in the format the scraper asks for, on both apps: Prometheus text by default, and
OpenMetrics (which carries exemplars: the trace id of a sample in a histogram bucket, so a slow
bucket in Grafana opens its trace) when the ``Accept`` header names it, as Prometheus does when
exemplar storage is on. prometheus_client's own negotiation picks the encoder."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.responses import Response


def render_metrics(registry: CollectorRegistry, accept: str | None) -> Response:
    encode, content_type = choose_encoder(accept or "")
    return Response(encode(registry), headers={"Content-Type": content_type})
