"""Process settings for a server that holds thousands of long-lived streams: the open-files
limit and the cyclic garbage collector's thresholds.

Many systems start processes with a soft RLIMIT_NOFILE of 1,024 and a much higher hard limit;
a control plane serving thousands of proxies needs a socket for each. As Envoy's and most
servers' operating guides advise, the soft limit is raised to the hard limit at start (an
unprivileged process may do so), and the change is logged.

Each stream holds about ninety objects the cyclic collector tracks (most of them grpcio's), so
10,000 streams make close to a million, and a full collection takes half a second or more on a
busy machine. With Python's default thresholds (700, 10, 10) a push to 10,000 streams allocates
enough to run two of them, which more than doubled its time. Larger thresholds keep the young
collections cheap and make full ones a hundred times rarer."""

from __future__ import annotations

import gc
import logging
import resource
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

_NR_OPEN = Path("/proc/sys/fs/nr_open")  # the kernel's ceiling when the hard limit is unlimited
_FALLBACK_CEILING = 1 << 20
GC_THRESHOLDS: Final = (10_000, 10, 100)


def _ceiling(hard: int) -> int:
    if hard != resource.RLIM_INFINITY:
        return hard
    try:
        return int(_NR_OPEN.read_text())
    except (OSError, ValueError):
        return _FALLBACK_CEILING


def raise_open_files_limit() -> int:
    """Raise the soft open-files limit to the hard limit; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _ceiling(hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as error:
            log.warning(
                "open-files limit stays %d (cannot raise it to %d: %s)", soft, target, error
            )
            return soft
        log.info(
            "open-files limit raised from %d to %d (a socket per connected node)", soft, target
        )
        return target
    return soft


def tune_collector() -> None:
    """Raise the cyclic collector's thresholds to :data:`GC_THRESHOLDS` (never lower them)."""
    current = gc.get_threshold()
    wanted = tuple(max(a, b) for a, b in zip(current, GC_THRESHOLDS, strict=True))
    if wanted != current:
        gc.set_threshold(*wanted)
