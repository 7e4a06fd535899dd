"""Process settings of the ADS server: it raises the open-files soft limit to the hard limit when it
starts (a socket per connected node) and says so in its log; the cyclic collector's young
threshold is raised (never lowered), and raised further while a push is held."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap

from tulle.xds.tuning import (
    YOUNG_MIN,
    YOUNG_PER_STREAM,
    CollectorHold,
    raise_young_threshold,
)

SCRIPT = textwrap.dedent(
    """
    import asyncio, logging, resource
    from tulle.xds.server import AdsServer, start_server

    class NoResources:
        def resources(self, node, type_url):
            return {}

    logging.basicConfig(level="INFO", format="%(name)s: %(message)s")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    async def main():
        server, _, _ = await start_server(AdsServer(NoResources()), "127.0.0.1", 0)
        await server.stop(0)

    asyncio.run(main())
    print(resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard) or hard == resource.RLIM_INFINITY)
    """
)


def test_the_server_raises_its_open_files_soft_limit_to_the_hard_limit():
    # In a process of its own: the test process's limits stay as they are.
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "True"
    assert "tulle.xds.tuning: open-files limit raised from 256 to" in done.stderr


def test_the_young_threshold_is_raised_never_lowered_and_a_hold_is_released_as_found():
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        assert raise_young_threshold() == YOUNG_MIN
        gc.set_threshold(50_000, 10, 10)
        assert raise_young_threshold() == 50_000

        hold = CollectorHold()
        hold.hold(10_000)
        assert hold.holding
        assert gc.get_threshold() == (10_000 * YOUNG_PER_STREAM, 10, 10)
        hold.hold(100)  # a second push meanwhile, to fewer streams: the hold stays as large
        assert gc.get_threshold() == (10_000 * YOUNG_PER_STREAM, 10, 10)
        hold.release()
        assert not hold.holding
        assert gc.get_threshold() == (50_000, 10, 10)
        hold.release()  # nothing held: nothing changes
        assert gc.get_threshold() == (50_000, 10, 10)
    finally:
        gc.set_threshold(*before)
