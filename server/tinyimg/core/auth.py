"""Edge security: API keys (kept only as sha256 hashes, compared in constant time) and a per-key
token-bucket rate limit. Pure parts (hashing, matching, the bucket); keys files are read by
``tinyimg.core.tenants.load_tenants``."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

# Failed key attempts allowed per client address: a burst for a mistyped key, then one a second,
# so guessing is slow; beyond it the answer is 429, not 401.
AUTH_FAILURE_RATE = 1.0
AUTH_FAILURE_BURST = 20.0


class KeyFileError(Exception):
    pass


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_key_lines(text: str) -> list[str]:
    """One key per line; blank lines and lines starting with '#' are skipped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def parse_bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def hash_bearer(header: str | None) -> str | None:
    """The hash of the key an ``Authorization: Bearer <key>`` header carries, or None without one:
    what a job and a router job id are bound to."""
    token = parse_bearer(header)
    return hash_key(token) if token else None


def match_key(token: str | None, hashes: list[str]) -> str | None:
    """The stored hash ``token`` matches, or None. Every stored hash is compared (constant time per
    comparison, same number of comparisons whatever the token), so timing tells nothing."""
    if token is None:
        return None
    candidate = hash_key(token)
    found = None
    for stored in hashes:
        if hmac.compare_digest(candidate, stored):
            found = stored
    return found


@dataclass
class TokenBucket:
    """``rate`` tokens per second, up to ``burst``; one request takes one token."""

    rate: float
    burst: float
    tokens: float = -1.0  # -1: full on first use
    updated: float = 0.0

    def take(self, now: float) -> float:
        """0 when the request may pass; otherwise the seconds until a token will be there."""
        if self.tokens < 0:
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate

    def is_full_at(self, now: float) -> bool:
        return self.tokens < 0 or self.tokens + (now - self.updated) * self.rate >= self.burst


@dataclass
class RateLimiter:
    """One bucket per key (or per client address when keys are off). Past ``max_buckets``, buckets
    that have refilled are dropped (a fresh one is the same), so many addresses cannot grow memory
    without bound."""

    rate: float
    burst: float
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    max_buckets: int = 10_000

    def take(self, who: str, now: float) -> float:
        bucket = self.buckets.get(who)
        if bucket is None:
            if len(self.buckets) >= self.max_buckets:
                self.buckets = {k: b for k, b in self.buckets.items() if not b.is_full_at(now)}
            bucket = self.buckets[who] = TokenBucket(self.rate, self.burst)
        return bucket.take(now)


def build_auth_failure_limiter() -> RateLimiter:
    return RateLimiter(AUTH_FAILURE_RATE, AUTH_FAILURE_BURST)
