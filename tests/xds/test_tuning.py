"""The ADS server raises the process's open-files soft limit to the hard limit when it starts
(a socket per connected node), and says so in its log."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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
        server, _ = await start_server(AdsServer(NoResources()), "127.0.0.1", 0)
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
