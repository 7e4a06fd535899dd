"""The process's open-files limit, raised for a server that holds one socket per client.

Many systems start processes with a soft RLIMIT_NOFILE of 1,024 and a much higher hard limit;
a control plane serving thousands of proxies needs a socket for each. As Envoy's and most
servers' operating guides advise, the soft limit is raised to the hard limit at start (an
unprivileged process may do so), and the change is logged."""

from __future__ import annotations

import logging
import resource
from pathlib import Path

log = logging.getLogger(__name__)

_NR_OPEN = Path("/proc/sys/fs/nr_open")  # the kernel's ceiling when the hard limit is unlimited
_FALLBACK_CEILING = 1 << 20


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
