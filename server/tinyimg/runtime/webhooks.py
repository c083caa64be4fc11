"""Signed webhooks for finished jobs, in the Standard Webhooks style.

Headers ``webhook-id`` (the same on every retry, so a receiver can drop duplicates),
``webhook-timestamp`` (Unix seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256 of
"id.timestamp.body">``. A secret written ``whsec_<base64>`` is decoded as Standard Webhooks
libraries do; any other secret is used as its bytes. The id is ``msg_<this server's job id>``
(through a router, that is the first part of the router id the body carries): unique, and free of
the '.' that separates the signed parts. The body is the job as its client knows it (the router's
id and URLs when a router created it: api.jobs.build_webhook_payload).

Only hosts on ``jobs.webhookAllowedHosts`` are called (no list: no webhooks), never a link-local
or cloud-metadata address (checked when the job is created and again before each attempt, since
DNS may change in between), never following redirects. Failed attempts are retried with
doubling delays up to ``webhookMaxAttempts``; then the delivery is given up and logged.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tinyimg.errors import InvalidField
from tinyimg.spec import ConfigError, JobsConfig

log = logging.getLogger("tinyimg.webhooks")

# Cloud metadata services answer on these (besides 169.254.0.0/16, refused as link-local).
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")})


def read_webhook_secret(path: str) -> bytes:
    try:
        text = Path(path).read_text().strip()
    except OSError as err:
        raise ConfigError(f"jobs.webhookSecretFile {path}: cannot read: {err.strerror or err}") from None
    if not text:
        raise ConfigError(f"jobs.webhookSecretFile {path} is empty")
    if text.startswith("whsec_"):
        try:
            return base64.b64decode(text.removeprefix("whsec_"), validate=True)
        except ValueError:
            raise ConfigError(f"jobs.webhookSecretFile {path}: whsec_ secret is not valid base64") from None
    return text.encode()


def sign(secret: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def build_webhook_headers(secret: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }


def is_forbidden_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_link_local or ip in METADATA_ADDRESSES or ip.is_multicast or ip.is_unspecified


def check_webhook_url(url: str, allowed_hosts: list[str] | None) -> tuple[str, int]:
    """The URL's host and port, or a 422 naming ``webhook`` and why (pure: no DNS here)."""
    if not allowed_hosts:
        raise InvalidField("webhook", "webhooks are not enabled on this server (no jobs.webhookAllowedHosts)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise InvalidField("webhook", f"not a valid URL: {err}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidField("webhook", "must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise InvalidField("webhook", "must not carry credentials")
    host = parts.hostname.lower()
    if host not in {h.lower() for h in allowed_hosts}:
        raise InvalidField("webhook", f"host {host!r} is not on this server's webhook allow-list")
    return host, port or (443 if parts.scheme == "https" else 80)


def check_resolved(host: str, port: int) -> None:
    """Refuse a host that resolves to a link-local or metadata address (blocking DNS: call in a thread)."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as err:
        raise InvalidField("webhook", f"host {host!r} does not resolve: {err}") from None
    for info in infos:
        if is_forbidden_address(str(info[4][0])):
            raise InvalidField("webhook", f"host {host!r} resolves to a link-local or metadata address")


async def check_webhook(url: str, config: JobsConfig) -> str:
    host, port = check_webhook_url(url, config.webhook_allowed_hosts)
    await asyncio.to_thread(check_resolved, host, port)
    return url


class WebhookSender:
    """Delivers each finished job's webhook in its own task, with bounded retries."""

    def __init__(self, config: JobsConfig, on_outcome: Callable[[str], None] | None = None,
                 sleep: Callable[[float], Any] = asyncio.sleep):
        self.config = config
        self.secret = read_webhook_secret(config.webhook_secret_file) if config.webhook_secret_file else None
        self.on_outcome = on_outcome
        self.sleep = sleep
        self.tasks: set[asyncio.Task[bool]] = set()

    def schedule(self, url: str, message_id: str, payload: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self.deliver(url, message_id, payload))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def deliver(self, url: str, message_id: str, payload: dict[str, Any]) -> bool:
        import httpx

        if self.secret is None:
            self._outcome("not_configured", url, message_id, "no jobs.webhookSecretFile")
            return False
        body = json.dumps(payload, separators=(",", ":")).encode()
        delay = self.config.webhook_backoff_seconds
        async with httpx.AsyncClient(timeout=self.config.webhook_timeout_seconds, follow_redirects=False,
                                     trust_env=False) as client:
            for attempt in range(1, self.config.webhook_max_attempts + 1):
                why = await self._attempt(client, url, message_id, body)
                if why is None:
                    self._outcome("delivered", url, message_id, f"attempt {attempt}")
                    return True
                if why.startswith("refused"):
                    self._outcome("refused", url, message_id, why)
                    return False
                log.warning("webhook attempt failed", extra={"url": url, "webhook_id": message_id,
                                                             "attempt": attempt, "why": why})
                if attempt < self.config.webhook_max_attempts:
                    await self.sleep(delay)
                    delay *= 2
        self._outcome("gave_up", url, message_id, f"{self.config.webhook_max_attempts} attempts failed")
        return False

    async def _attempt(self, client: Any, url: str, message_id: str, body: bytes) -> str | None:
        """None when delivered, else why not ("refused ..." is final)."""
        assert self.secret is not None  # deliver() checked
        try:
            host, port = check_webhook_url(url, self.config.webhook_allowed_hosts)
            await asyncio.to_thread(check_resolved, host, port)
        except InvalidField as err:
            return f"refused: {err.reason}"
        headers = build_webhook_headers(self.secret, message_id, int(time.time()), body)
        try:
            response = await client.post(url, content=body, headers=headers)
        except Exception as err:  # network errors of any kind: retried
            return f"{type(err).__name__}: {err}"
        return None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"

    def _outcome(self, outcome: str, url: str, message_id: str, detail: str) -> None:
        level = logging.INFO if outcome == "delivered" else logging.ERROR
        log.log(level, "webhook %s", outcome, extra={"url": url, "webhook_id": message_id, "detail": detail})
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    async def stop(self, grace: float = 5.0) -> None:
        """Let deliveries in flight finish briefly, then cancel them (shutdown)."""
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=grace)
            for task in pending:
                task.cancel()
