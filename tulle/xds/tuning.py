"""Process settings for a server that holds thousands of long-lived streams: the open-files
limit and the cyclic garbage collector's thresholds.

Many systems start processes with a soft RLIMIT_NOFILE of 1,024 and a much higher hard limit;
a control plane serving thousands of proxies needs a socket for each. As Envoy's and most
servers' operating guides advise, the soft limit is raised to the hard limit at start (an
unprivileged process may do so), and the change is logged.

Each stream holds about ninety objects the cyclic collector tracks (most of them grpcio's), and
a push to 10,000 streams has 100,000 to 150,000 more in flight at once (tasks, futures, grpcio's
operations; all freed as the writes complete). With Python's default young-generation threshold
(700) every push ran young collections that traversed those, promoted them, and ran full
collections of the million objects (two in a push to 10,000 streams: 1.02 s). The young
generation is sized to hold a push's objects in flight (:func:`size_collector`), so that a push
runs no collection. A closed stream leaves about five objects in reference cycles, so the rarer
collections let little garbage wait."""

from __future__ import annotations

import gc
import logging
import resource
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

_NR_OPEN = Path("/proc/sys/fs/nr_open")  # the kernel's ceiling when the hard limit is unlimited
_FALLBACK_CEILING = 1 << 20
YOUNG_PER_STREAM: Final = 25  # objects a push holds in flight per stream: 10-15, and a margin
YOUNG_MIN: Final = 10_000


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


def size_collector(streams: int) -> int:
    """Let the cyclic collector's young generation hold what a push to ``streams`` streams has in
    flight (never lowering its threshold); returns the threshold in force."""
    young = max(YOUNG_MIN, YOUNG_PER_STREAM * streams)
    threshold = gc.get_threshold()
    if young <= threshold[0]:
        return threshold[0]
    gc.set_threshold(young, *threshold[1:])
    return young
