"""The sidecar's RSS at start with mTLS: one pair (A calls B over mutual TLS, each with a
certificate from a real ``tulle controlplane``'s CA), beside a plain pair (every sidecar still has
its certificate), from the sources and from the compiled build (``make compiled``) when there is
one, after the first request through both. Also says whether
the sidecar mapped ``cryptography``'s Rust extension (it should not: the workload side uses the
libcrypto Python's ``ssl`` already loaded). Measures; never asserts.

    python -m benchmarks.mtls_rss [--compiled DIR]

Needs nginx and taskset."""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from benchmarks.mtls_mesh import PairSpec, start_control_plane, start_sidecar_pair
from benchmarks.proxy_http import COMPILED, PROJECT, deployed_python, rss_mb, start_nginx


def maps_cryptography(pid: int) -> bool:
    """True when process ``pid`` mapped cryptography's ``_rust`` extension."""
    return "cryptography" in Path(f"/proc/{pid}/maps").read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--compiled", type=Path, default=COMPILED)
    args = parser.parse_args()
    specs = [PairSpec("plain", False, PROJECT), PairSpec("mtls", True, PROJECT)]
    if (args.compiled / "tulle").is_dir():
        compiled = args.compiled.resolve()
        specs += [PairSpec("mypyc-plain", False, compiled), PairSpec("mypyc-mtls", True, compiled)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            nginx, backend = start_nginx(work)
            procs.append(nginx)
            plane = start_control_plane(work, specs)
            procs.append(plane.proc)
            python = deployed_python(work)
            for spec in specs:
                pair = start_sidecar_pair(plane, python, spec, backend)
                procs += [pair.a, pair.b]
                for side, proc in (("A", pair.a), ("B", pair.b)):
                    crypto = "maps" if maps_cryptography(proc.pid) else "does not map"
                    print(
                        f"tulle-{spec.name} {side} RSS: {rss_mb(proc.pid):.1f} MB "
                        f"({crypto} cryptography)"
                    )
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait()


if __name__ == "__main__":
    main()
