"""``make demo``: the shop as a live mesh. Starts it with ``tulle up -d -f examples/shop/``,
sends it steady traffic, and shows a live table of every service's requests/s, success rate and
latency read from the mesh's own metrics, with things to try. Ctrl-C stops the traffic and the
mesh (``tulle down``).

    python examples/shop/demo.py [--seconds N] [--state-dir .tulle] [--rate 20]"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from tulle.local.state import StateDir
from tulle.local.top import Watcher, table

REPO = Path(__file__).parent.parent.parent
TULLE = [sys.executable, "-m", "tulle"]


def hints(frontend: str, payment: str) -> Text:
    return Text(
        f"""
frontend calls catalog (v1 90% / v2 10%), cart (library mode; calls catalog itself),
payment (fails 20%, hangs 5%: retried, timed out) and auth (gRPC). Try, elsewhere:
  .venv/bin/tulle dashboard                     the live service graph, services, traces and
                                                config in your browser (a one-time login link)
  curl -s http://{frontend}/                   one page: what every call answered
  curl -s -H 'x-canary: true' http://{frontend}/   testers always get catalog v2
  curl -s -H 'x-chaos: abort' http://{frontend}/   the mesh aborts 50% of payments
  curl -s -X POST http://{payment}/break       payment-0 fails every call: retries
                                                hide it, then outlier detection ejects it
                                                (the dashboard's payment edge turns red)
                                                (its app's own port: its sidecar is STRICT
                                                and pays only the frontend, security.yaml)
  curl -s -X POST http://CATALOG/break        on every catalog replica (tulle status):
                                                the mesh falls back to catalog-cache
  .venv/bin/tulle status     .venv/bin/tulle logs payment -c proxy
  .venv/bin/tulle traces --status error         recent traces with a failed call (payment's
                                                retries show); tulle traces TRACE_ID draws one
  .venv/bin/tulle apply -f FILE                 e.g. the catalog split at 50/50
Ctrl-C stops the traffic and the mesh.""",
        style="dim",
    )


def load(url: str, rate: float, stop: threading.Event) -> None:
    """Steady traffic: ``rate`` pages per second over four workers."""

    def worker() -> None:
        with httpx.Client(timeout=10) as client:
            next_at = time.monotonic()
            while not stop.is_set():
                next_at += 4 / rate
                with contextlib.suppress(httpx.HTTPError):
                    client.get(url)
                stop.wait(max(0.0, next_at - time.monotonic()))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    # A closed terminal (SIGHUP) or a kill (SIGTERM) stops the mesh too, as Ctrl-C does. Ctrl-C
    # is set explicitly: a demo started in the background of a non-interactive shell inherits
    # SIGINT ignored, and Python then leaves it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long")
    parser.add_argument("--state-dir", default=".tulle")
    parser.add_argument("--rate", type=float, default=20.0, help="frontend pages per second")
    parser.add_argument("--api-port", default="15014")
    parser.add_argument("--xds-port", default="15010")
    args = parser.parse_args()
    state = StateDir(Path(args.state_dir))
    print("== tulle up -d -f examples/shop/   (the control plane, 10 replicas, their sidecars)")
    started = subprocess.run(
        [*TULLE, "up", "-d", "-f", "examples/shop/", "--state-dir", args.state_dir,
         "--api-port", args.api_port, "--xds-port", args.xds_port],
        cwd=REPO, check=False,
    )  # fmt: skip
    if started.returncode != 0:
        sys.exit(started.returncode)
    stop = threading.Event()
    try:
        mesh = state.read()
        assert mesh is not None
        address = {r.replica: r.address for r in mesh.replicas}
        url = f"http://{address['frontend-0']}/"
        traffic = threading.Thread(target=load, args=(url, args.rate, stop), daemon=True)
        traffic.start()
        watcher = Watcher(mesh)
        began = time.monotonic()
        apps = {r.replica: r.app for r in mesh.replicas}
        advice = hints(address["frontend-0"], apps["payment-0"])
        console = Console() if sys.stdout.isatty() else Console(width=120)
        with Live(Group(table([]), advice), refresh_per_second=4, console=console) as live:
            while not args.seconds or time.monotonic() - began < args.seconds:
                time.sleep(2)
                view = table(watcher.next())
                live.update(Group(view, advice))
                if not console.is_terminal:  # a pipe or a file gets only Live's last view:
                    console.print(view)  # each refresh is written out, as a log
        watcher.close()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        print("\n== tulle down")
        subprocess.run([*TULLE, "down", "--state-dir", args.state_dir], cwd=REPO, check=False)


if __name__ == "__main__":
    main()
