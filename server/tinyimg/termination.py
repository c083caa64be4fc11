"""Why models failed to load, written where Kubernetes reads a container's termination message.

A pod whose model cannot load is restarted by its startup probe; the kubelet then copies the file
at the container's ``terminationMessagePath`` into the pod's status, where the operator reads it
for the ImageModel's ``Degraded`` condition. Without this file that message would be the log's
tail (``FallbackToLogsOnError``): by then probe lines, not the reason. The file is written only
where it already exists (the kubelet creates it), so a standalone server writes nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("tinyimg.termination")

# The kubelet keeps at most 4096 bytes of a termination message.
MESSAGE_LIMIT = 4096


def build_termination_message(failures: dict[str, str]) -> str:
    """One line per failed model, bounded; a long reason keeps its end, where the cause is (pure)."""
    lines = [f"model {name} failed: {reason}" for name, reason in sorted(failures.items())]
    text = "\n".join(lines)
    data = text.encode()
    if len(data) <= MESSAGE_LIMIT:
        return text
    return "..." + data[-(MESSAGE_LIMIT - 3):].decode(errors="ignore")


class TerminationLog:
    """Keeps the failures seen so far and rewrites the file with all of them (never raises)."""

    def __init__(self, path: Path | None):
        self.path = path
        self.failures: dict[str, str] = {}

    def record(self, model: str, state: str, reason: str | None) -> None:
        if self.path is None:
            return
        if state == "failed":
            self.failures[model] = reason or "unknown reason"
        elif self.failures.pop(model, None) is None:
            return
        if not self.path.is_file():
            return
        try:
            self.path.write_text(build_termination_message(self.failures))
        except OSError as err:
            log.warning("cannot write the termination message: %s", err, extra={"path": str(self.path)})
