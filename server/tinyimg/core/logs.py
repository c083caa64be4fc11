"""Structured logs: one JSON object per line, each carrying the current request id.

With tracing on (``tinyimg.core.tracing``), a record made inside a span also carries ``trace_id``
and ``span_id``: a log line leads to its trace and back.

The request id lives in a contextvar set by the HTTP middleware, so every record logged while a
request is handled (routes, engine callbacks on the same task) carries it without passing it
around. ``configure_logging`` is called once, by the CLI; libraries only call ``getLogger``.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from tinyimg.core.tracing import read_ids

request_id_var: ContextVar[str] = ContextVar("tinyimg_request_id", default="")

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is emitted.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", "taskName"}
    # uvicorn's copy of the message with terminal colour codes
    | {"color_message"}
)


class RequestIdFilter(logging.Filter):
    """Stamps the current request id on a record (unless the caller gave one explicitly). A device
    worker logs outside any request, for a whole batch: its ``request_ids`` become the record's
    ``request_id`` (comma-separated), so a search for one id finds its batch lines too."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            batch = getattr(record, "request_ids", None)
            record.request_id = ",".join(batch) if batch else request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "") or request_id_var.get(),
        }
        if not getattr(record, "trace_id", None):
            ids = read_ids()  # the span current where the record was made (same thread, same task)
            if ids is not None:
                entry["trace_id"], entry["span_id"] = ids
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Send every logger (ours, uvicorn's) through one JSON handler on the root logger."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
