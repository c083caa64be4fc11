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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.trace import SpanKind, Status, StatusCode

from tinyimg.core.errors import InvalidField
from tinyimg.core.tracing import inject_dict, span
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


NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: an IPv4 address in the last 32 bits


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, Teredo, IPv4-compatible), if any:
    each reaches the IPv4 host through a translator, the metadata address included."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if int(ip) >> 32 == 0 and int(ip) > 1:  # ::a.b.c.d (deprecated IPv4-compatible form)
        return ipaddress.IPv4Address(int(ip))
    return None


def is_forbidden_address(address: str) -> bool:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.is_link_local or ip in METADATA_ADDRESSES or ip.is_multicast or ip.is_unspecified:
            return True
        ip = embedded_ipv4(ip) or ip
    return ip.is_link_local or ip in METADATA_ADDRESSES or ip.is_multicast or ip.is_unspecified


def check_webhook_url(url: str, allowed_hosts: list[str] | None) -> tuple[str, int]:
    """The URL's host and port, or a 422 naming ``webhook`` and why (pure: no DNS here)."""
    if not allowed_hosts:
        raise InvalidField("webhook", "webhooks are not enabled on this server (no jobs.webhookAllowedHosts)")
    # urlsplit drops tabs and newlines where an HTTP client may not: one reading for both, none.
    if any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidField("webhook", "must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise InvalidField("webhook", f"not a valid URL: {err}") from None
    if port == 0:
        raise InvalidField("webhook", "not a valid URL: port 0")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidField("webhook", "must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise InvalidField("webhook", "must not carry credentials")
    host = parts.hostname.lower()
    if host not in {h.lower() for h in allowed_hosts}:
        raise InvalidField("webhook", f"host {host!r} is not on this server's webhook allow-list")
    return host, port or (443 if parts.scheme == "https" else 80)


def check_resolved(host: str, port: int) -> str:
    """The address to connect to: refused when the host resolves to a link-local or metadata
    address (any of its addresses). Blocking DNS: call in a thread. The caller connects to this
    very address, so a second lookup cannot answer differently (DNS rebinding)."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as err:
        raise InvalidField("webhook", f"host {host!r} does not resolve: {err}") from None
    for info in infos:
        if is_forbidden_address(str(info[4][0])):
            raise InvalidField("webhook", f"host {host!r} resolves to a link-local or metadata address")
    return str(infos[0][4][0])


def build_pinned_url(url: str, address: str) -> str:
    """``url`` with its host replaced by the checked ``address`` (the Host header and TLS name
    stay the original host's: see ``WebhookSender._attempt``)."""
    parts = urlsplit(url)
    literal = f"[{address}]" if ":" in address else address
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    return parts._replace(netloc=netloc).geturl()


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

    def schedule(self, url: str, message_id: str, payload: dict[str, Any] | Awaitable[dict[str, Any]]) -> None:
        """Deliver ``payload`` (or what it resolves to: a payload whose image URLs are signed first)."""

        async def run() -> bool:
            return await self.deliver(url, message_id, payload if isinstance(payload, dict) else await payload)

        task = asyncio.get_running_loop().create_task(run())
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
                with span("webhook", {"tinyimg.webhook_id": message_id, "tinyimg.attempt": attempt,
                                      "server.address": urlsplit(url).hostname or ""}, kind=SpanKind.CLIENT) as current:
                    why = await self._attempt(client, url, message_id, body)
                    if why is not None and current is not None:
                        current.set_status(Status(StatusCode.ERROR, why))
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
            address = await asyncio.to_thread(check_resolved, host, port)
        except InvalidField as err:
            return f"refused: {err.reason}"
        headers = inject_dict({**build_webhook_headers(self.secret, message_id, int(time.time()), body),
                               "Host": urlsplit(url).netloc})  # and the attempt's traceparent
        try:
            # One deadline for the whole attempt (a receiver trickling a byte at a time resets
            # httpx's per-read timeout forever), and the answer's body is never read: its status
            # is all that counts, so a receiver cannot make the server hold a large answer.
            async with asyncio.timeout(self.config.webhook_timeout_seconds):
                async with client.stream("POST", build_pinned_url(url, address), content=body, headers=headers,
                                         extensions={"sni_hostname": host}) as response:
                    status = response.status_code
        except Exception as err:  # network errors and the deadline: retried
            return f"{type(err).__name__}: {err}"
        return None if 200 <= status < 300 else f"HTTP {status}"

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
