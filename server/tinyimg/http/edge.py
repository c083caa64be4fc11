"""``install_edge(app, limits)``: the same edge on both apps, in one call."""

from __future__ import annotations

from fastapi import FastAPI

from tinyimg.core.tracing import tracing_on
from tinyimg.http.context import Observer, RequestContextMiddleware
from tinyimg.http.handlers import install_error_handlers
from tinyimg.http.limits import EdgeLimits
from tinyimg.http.tracing import TracingMiddleware


def install_edge(app: FastAPI, limits: EdgeLimits, observe: Observer | None = None,
                 extra_headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    install_error_handlers(app)
    # Outermost: the request id and the access log cover every answer, 413 included.
    app.add_middleware(RequestContextMiddleware, limits=limits, observe=observe, extra_headers=extra_headers)
    if tracing_on():  # outside it: the access line and the metrics observer run inside the request's span
        app.add_middleware(TracingMiddleware)
