"""This process's own resource use, for /status: resident memory and CPU time (not the host's)."""

from __future__ import annotations

import os
import resource

from tinyimg.wire.contract import ProcessStatus

_PAGE = os.sysconf("SC_PAGE_SIZE")


def read_process_status() -> ProcessStatus:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    try:
        with open("/proc/self/statm") as f:  # current RSS; getrusage only has the peak
            rss = int(f.read().split()[1]) * _PAGE
    except OSError:
        rss = usage.ru_maxrss * 1024
    return ProcessStatus(rss_bytes=rss, cpu_seconds=round(usage.ru_utime + usage.ru_stime, 3))
