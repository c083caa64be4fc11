"""What one process accepts from a client, in one frozen object both services build from their
settings. Pure: no I/O except reading the process's file-descriptor limit."""

from __future__ import annotations

import resource
from dataclasses import dataclass

# File descriptors kept back from the connection bound: the listening socket, logs, the pooled
# upstream connections of a router, model files, so a flood of clients cannot starve them.
RESERVED_FDS = 64


@dataclass(frozen=True)
class EdgeLimits:
    # One request's body: an img2img or inpaint request with a 1024² photo-like PNG and its mask is
    # about 3 MB of JSON (base64); 8 MiB leaves room, 2048² inputs need a higher value.
    max_body_bytes: int = 8 * 2**20
    # All request bodies this process holds at once (counted as they arrive, released when their
    # request is answered): a crowd of large uploads is refused (503 server_busy), not buffered.
    max_body_bytes_total: int = 64 * 2**20
    # The request line plus all header lines. Browsers send 1-2 KiB; 32 KiB leaves room for big
    # cookies or tokens and bounds what a client can make the process hold per connection.
    max_header_bytes: int = 32 * 1024
    max_header_count: int = 100
    # A request head must arrive within this many seconds of the connection opening (or of the
    # previous answer): slowloris clients dripping one byte at a time are cut off.
    header_timeout: float = 10.0
    # Longest pause between two pieces of a request body.
    body_timeout: float = 30.0
    # An idle keep-alive connection is closed after this many seconds.
    keep_alive_timeout: float = 5.0
    # Open connections per process; past it, a new one gets a JSON 503 and is closed.
    max_connections: int = 1000


def build_connection_limit(wanted: int, fd_limit: int) -> int:
    """The connection bound the process can honour: never so many that accepting one more would
    run out of file descriptors (EMFILE stops accepting for everyone)."""
    return max(1, min(wanted, fd_limit - RESERVED_FDS))


def read_fd_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20
