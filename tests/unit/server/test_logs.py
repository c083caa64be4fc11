"""Structured logs: one JSON object per line, with the request id of the moment."""

import io
import json
import logging

import pytest

from tinyimg.core.logs import configure_logging, request_id_var

log = logging.getLogger("tinyimg.test")


@pytest.fixture
def log_stream():
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("info", stream)
    yield stream
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def read_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_is_json_with_the_current_request_id_and_extra_fields(log_stream):
    token = request_id_var.set("rid-42")
    log.info("done %s", "x", extra={"model": "tiny-sdxl", "duration_seconds": 0.5})
    request_id_var.reset(token)
    log.warning("outside")
    log.debug("hidden")
    first, second = read_lines(log_stream)
    assert first["message"] == "done x" and first["request_id"] == "rid-42"
    assert first["model"] == "tiny-sdxl" and first["duration_seconds"] == 0.5
    assert first["level"] == "info" and first["logger"] == "tinyimg.test"
    assert second["request_id"] == "" and second["level"] == "warning"


def test_an_exception_is_kept_on_its_one_line(log_stream):
    try:
        raise ValueError("bad thing")
    except ValueError:
        log.exception("failed")
    (line,) = read_lines(log_stream)
    assert "ValueError: bad thing" in line["exception"]


def test_a_batch_line_carries_the_request_ids_of_its_batch(log_stream):
    logging.getLogger("tinyimg.engine").info("batch done", extra={"request_ids": ["rid-1", "rid-2"]})
    (line,) = read_lines(log_stream)
    assert line["request_id"] == "rid-1,rid-2"
    assert line["request_ids"] == ["rid-1", "rid-2"]
