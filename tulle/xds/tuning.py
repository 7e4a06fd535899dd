"""Process settings for a server that holds thousands of long-lived streams: the open-files
limit and the cyclic garbage collector's thresholds.

Many systems start processes with a soft RLIMIT_NOFILE of 1,024 and a much higher hard limit;
a control plane serving thousands of proxies needs a socket for each. As Envoy's and most
servers' operating guides advise, the soft limit is raised to the hard limit at start (an
unprivileged process may do so), and the change is logged.

Each stream holds about ninety objects the cyclic collector tracks (most of them grpcio's), and
a push to 10,000 streams has 100,000 to 150,000 more in flight at once (tasks, futures, grpcio's
operations; all freed as the writes complete). With Python's default thresholds (700, 10, 10) a
push ran young collections that traversed those and promoted them, and then full collections of
the million objects (two in a push to 10,000 streams: 1.02 s). A young threshold large enough for
a push (25 objects per stream) avoids that, but left in force it lets the objects of a burst of
new streams pile up, and the push after it paid for traversing them (0.3-0.5 s). So the young
threshold is 10,000 (:func:`raise_young_threshold`), and :class:`CollectorHold` raises it for as
long as a push's writes are in flight. A closed stream leaves about five objects in reference
cycles: the rarer collections let little garbage wait."""

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


def raise_young_threshold() -> int:
    """Make the young generation's threshold at least :data:`YOUNG_MIN` (never lower it);
    returns it."""
    threshold = gc.get_threshold()
    if threshold[0] < YOUNG_MIN:
        gc.set_threshold(YOUNG_MIN, *threshold[1:])
    return max(threshold[0], YOUNG_MIN)


class CollectorHold:
    """Young collections held off while a push's writes are in flight: :meth:`hold` raises the
    young threshold to hold what a push to ``streams`` streams has in flight, :meth:`release`
    puts back the thresholds found at the first hold. (While a client does not take its
    writes, the hold stays: collections then run at the larger threshold.)"""

    def __init__(self) -> None:
        self._saved: tuple[int, int, int] | None = None

    @property
    def holding(self) -> bool:
        """A hold is in force."""
        return self._saved is not None

    def hold(self, streams: int) -> None:
        """Hold young collections off for a push to ``streams`` streams."""
        if self._saved is None:
            self._saved = gc.get_threshold()
        young = max(self._saved[0], YOUNG_PER_STREAM * streams)
        if young > gc.get_threshold()[0]:
            gc.set_threshold(young, *self._saved[1:])

    def release(self) -> None:
        """Put the thresholds back (nothing if no hold is in force)."""
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None
