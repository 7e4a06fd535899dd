"""``tulle proxy-wait`` and ``tulle proxy-drain``: the sidecar container's lifecycle hooks in an
injected pod (see docs/kubernetes.md).

- ``proxy-wait`` (the postStart hook of a sidecar that is a regular container, on clusters
  without native sidecars): returns once the sidecar's ``/ready`` answers 200 on its health port,
  so the kubelet starts the app's containers only then (Istio's ``pilot-agent wait``);
- ``proxy-drain`` (the preStop hook of a native sidecar): ``POST /drain`` on the admin listener
  with the token the sidecar wrote, so it stops taking connections and finishes the open ones
  before the kubelet's SIGTERM.

Both use the standard library only: they run inside the sidecar's container, beside it."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated

import typer

POLL_SECONDS = 0.2


def proxy_wait(
    health_port: Annotated[int, typer.Option(help="The sidecar's health port.")] = 15021,
    timeout: Annotated[float, typer.Option(help="Seconds to wait before failing.")] = 600.0,
) -> None:
    """Wait until the sidecar is ready (GET /ready answers 200); exit 1 after --timeout."""
    url = f"http://127.0.0.1:{health_port}/ready"
    deadline = time.monotonic() + timeout
    reason = "no answer yet"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except urllib.error.HTTPError as error:
            reason = f"{error.code} {error.read().decode(errors='replace').strip()}"
        except OSError as error:
            reason = str(getattr(error, "reason", error))
        if time.monotonic() >= deadline:
            typer.echo(f"error: the sidecar at {url} is not ready after {timeout:g}s: {reason}",
                       err=True)  # fmt: skip
            raise typer.Exit(1)
        time.sleep(POLL_SECONDS)


def proxy_drain(
    admin_port: Annotated[int, typer.Option(help="The sidecar's admin port.")] = 15000,
    admin_token_file: Annotated[
        Path, typer.Option(help="The admin token file the sidecar wrote (--admin-token-file).")
    ] = Path("/var/run/tulle/proxy/admin-token"),
) -> None:
    """Tell the sidecar to drain (POST /drain on its admin listener, with its admin token)."""
    try:
        token = admin_token_file.read_text().strip()
    except OSError as error:
        typer.echo(f"error: admin token file {admin_token_file}: {error.strerror}", err=True)
        raise typer.Exit(1) from None
    url = f"http://127.0.0.1:{admin_port}/drain"
    request = urllib.request.Request(
        url, method="POST", headers={"authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            typer.echo(answer.read().decode(errors="replace").strip())
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace").strip()
        typer.echo(f"error: {url} answered {error.code}: {detail}", err=True)
        raise typer.Exit(1) from None
    except OSError as error:
        typer.echo(f"error: {url}: {getattr(error, 'reason', error)}", err=True)
        raise typer.Exit(1) from None
