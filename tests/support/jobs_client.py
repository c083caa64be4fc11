"""Helpers for the jobs tests (server and router): a config whose tiny Flux steps are paced, API
keys, and a plain SSE reader over httpx."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.tiny_models import tiny_config
from tinyimg.spec import JobsConfig

KEYS = ("key-alice", "key-bob")
WEBHOOK_SECRET = b"webhook-secret-for-tests-0123456"
# 169.254.169.254 is listed so that the link-local check (not the allow-list) is what refuses it.
WEBHOOK_HOSTS = ["127.0.0.1", "169.254.169.254"]


@dataclass
class Event:
    id: int | str  # a number on the in-process path; a Redis stream id (``<ms>-<seq>``) on the shared one
    name: str
    data: dict[str, Any]


def build_jobs_config(dirs: dict[str, Path], tmp: Path, **jobs: Any):
    """Tiny Flux only (paced steps), API keys, and the jobs settings the tests need."""
    keys = tmp / "keys"
    keys.write_text("\n".join(KEYS) + "\n")
    config = tiny_config(
        dirs, ("flux",), limits={"maxSteps": 60},
        runtime={"maxBatchSize": 4, "maxBatchWaitMs": 150, "queueSize": 16},
    )
    config.api_keys_file = str(keys)
    secret = tmp / "webhook-secret"
    secret.write_text("whsec_" + base64.b64encode(WEBHOOK_SECRET).decode() + "\n")
    config.jobs = JobsConfig.model_validate({
        "progressIntervalMs": 0, "previewIntervalMs": 0, "keepaliveSeconds": 0.3, "webhookAllowedHosts": WEBHOOK_HOSTS,
        "webhookSecretFile": str(secret), "webhookBackoffSeconds": 0.05, "webhookMaxAttempts": 4, **jobs,
    })
    return config


def auth(key: str = KEYS[0]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def create(url: str, key: str = KEYS[0], **body: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/jobs", json={"model": "tiny-flux", "prompt": "a kite", **body},
                      headers=auth(key), timeout=30)


def read(url: str, job_id: str, key: str = KEYS[0]) -> dict[str, Any]:
    r = httpx.get(f"{url}/v1/jobs/{job_id}", headers=auth(key), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(url: str, job_id: str, predicate, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = read(url, job_id)
        if predicate(job):
            return job
        time.sleep(0.01)
    raise TimeoutError(f"job {job_id} never matched: {job}")


def stream(url: str, job_id: str, key: str = KEYS[0], last_event_id: int | str | None = None,
           stop_after: int | None = None, comments: list[str] | None = None,
           timeout: float = 60.0) -> list[Event]:
    """The events of a job's stream until it ends (or ``stop_after`` events: then hang up)."""
    headers = auth(key) | ({"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {})
    events: list[Event] = []
    fields: dict[str, str] = {}
    with httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events", headers=headers, timeout=timeout) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith(":"):
                if comments is not None:
                    comments.append(line)
            elif line:
                key_, _, value = line.partition(": ")
                fields[key_] = value
            elif "event" in fields:
                event_id = fields["id"]
                events.append(Event(int(event_id) if event_id.isdigit() else event_id, fields["event"],
                                    json.loads(fields["data"])))
                fields = {}
                if stop_after is not None and len(events) >= stop_after:
                    break
            else:
                fields = {}
    return events


