"""Loopback addresses for pods and Services (127.0.0.0/8 is all loopback on Linux, no root needed).

Each cluster takes a random /24 inside 127.0.0.0/8 (never 127.0.0.x), so two clusters on one
machine (two test runs at once) do not collide, and every pod can listen on its real container
port. An address is handed out only if nothing listens on it on the ports asked for.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable


def bindable(address: str, ports: Iterable[int]) -> bool:
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((address, port))
            except OSError:
                return False
    return True


class AddressPool:
    """``127.A.B.2`` to ``.254`` of one random ``A.B``; released addresses are reused last."""

    def __init__(self, rng: random.Random | None = None) -> None:
        rng = rng or random.Random()
        self.prefix = f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}"
        self._free = [f"{self.prefix}.{n}" for n in range(2, 255)]

    def take(self, ports: Iterable[int] = ()) -> str:
        ports = tuple(ports)
        for address in list(self._free):
            self._free.remove(address)
            if bindable(address, ports):
                return address
            self._free.append(address)
        raise RuntimeError(f"no free loopback address in {self.prefix}.0/24 for ports {ports}")

    def release(self, address: str) -> None:
        if address.startswith(self.prefix + ".") and address not in self._free:
            self._free.append(address)
