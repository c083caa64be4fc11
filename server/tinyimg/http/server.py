"""The uvicorn settings both services run with, built in one place.

Why uvicorn with its h11 protocol, subclassed (``tinyimg.http.protocol``): uvicorn has a
keep-alive timeout but neither a header-read timeout nor a header-size bound with its default
httptools parser; h11 bounds the head natively, and a small subclass adds the header timeout and
a connection bound. Generation takes seconds, so h11's pure-Python parsing (tens of microseconds
per request) costs nothing measurable, and no second server stack is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tinyimg.http.limits import EdgeLimits, build_connection_limit, read_fd_limit
from tinyimg.http.protocol import build_protocol_class


def build_server_options(
    limits: EdgeLimits, trusted_proxies: Sequence[str] = (), fd_limit: int | None = None
) -> dict[str, Any]:
    """``uvicorn.Config`` keywords. X-Forwarded-For/-Proto are believed only from
    ``trusted_proxies`` (addresses or networks of the ingress); none by default, whereas uvicorn
    trusts loopback by default, which let a local client spoof its address to the rate limit."""
    connections = build_connection_limit(limits.max_connections, fd_limit if fd_limit is not None else read_fd_limit())
    edge = EdgeLimits(**{**limits.__dict__, "max_connections": connections})
    return {
        "http": build_protocol_class(edge),
        "timeout_keep_alive": limits.keep_alive_timeout,
        "h11_max_incomplete_event_size": limits.max_header_bytes,
        "proxy_headers": bool(trusted_proxies),
        "forwarded_allow_ips": list(trusted_proxies),
        # Our JSON handler (tinyimg.core.logs) formats uvicorn's records; the access line is ours.
        "log_config": None,
        "access_log": False,
    }
