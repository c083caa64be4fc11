"""A job as stored: what every reader needs to answer for it without the pod that ran it (pure).

A stored job is two JSON documents: ``doc``, the job resource (``JobResponse``) without its URLs,
and ``order``, what is private to it: the request that created it (with its seed fixed, so a pod
that takes it again makes the same image), the hash of the key that may read it, its output
format, its image keys in the result store, and the base URLs its client knows. In Redis they are
fields of the job's hash; on one machine, ``jobs/<id>/job.json`` in the result store holds both.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from tinyimg.core.jobs import TERMINAL, JobNotFound, build_job_url


@dataclass
class StoredJob:
    id: str
    doc: dict[str, Any]
    order: dict[str, Any]
    status: str
    attempts: int = 0
    entry: str | None = None  # its entry in the model's queue stream (Redis)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def model(self) -> str:
        return str(self.doc["model"])

    @property
    def image_keys(self) -> list[str]:
        return list(self.order.get("image_keys") or [])

    def check_key(self, key_hash: str | None) -> StoredJob:
        """Itself when ``key_hash`` may read it; else 404 ``job_not_found``, as for an unknown id."""
        owner = self.order.get("key_hash")
        if owner is not None and (key_hash is None or not hmac.compare_digest(owner, key_hash)):
            raise JobNotFound(self.id)
        return self

    def to_record(self) -> dict[str, Any]:
        """What ``jobs/<id>/job.json`` holds."""
        return {"id": self.id, "status": self.status, "doc": self.doc, "order": self.order}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> StoredJob:
        return cls(str(data["id"]), dict(data["doc"]), dict(data["order"]), str(data["status"]))


def render_job(job: StoredJob, base_url: str, image_urls: list[str], position: int | None = None) -> dict[str, Any]:
    """The job resource as seen at ``base_url``: its URLs filled in, image URLs from the store."""
    doc = dict(job.doc)
    doc["id"] = job.id
    doc["status"] = job.status
    doc["status_url"] = build_job_url(base_url, job.id)
    doc["events_url"] = build_job_url(base_url, job.id, "/events")
    if job.status == "queued":
        doc["position"] = position
    images = doc.get("images")
    if images:
        doc["images"] = [{**image, "url": url} for image, url in zip(images, image_urls, strict=False)]
    return doc


def cancel_document(doc: dict[str, Any], now: float) -> dict[str, Any]:
    """The document of a job cancelled now."""
    return {**doc, "status": "cancelled", "position": None, "eta_seconds": None, "finished_at": now}
