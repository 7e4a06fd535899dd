"""The sidecar's health listener (``--health-port``; Istio's 15021 ``/healthz/ready`` and 15020
``/app-health``), for the kubelet: read-only, two kinds of path, no state change.

- ``GET /ready``: 200 ``LIVE`` when the sidecar is ready for traffic, else 503 and why (the
  injected startup and readiness probes of the sidecar);
- ``GET /app-health/<container>/<probe>``: the app's original HTTP probe (the injector moved it
  here, see ``tulle.inject.probes``), performed now against the app on loopback: 200 when the app
  answered 200-399 (the kubelet's success), 503 with the reason when it answered otherwise, did
  not answer in the probe's ``timeoutSeconds``, or refused the connection. Any other path is 404,
  any other method 405. The probes come from ``TULLE_APP_PROBERS`` (JSON, as Istio's
  ``ISTIO_KUBE_APP_PROBERS``); the listener probes only 127.0.0.1, so nothing reached here can
  make the sidecar connect elsewhere.

Not on the request path: one short connection per kubelet probe."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tulle.transport.http_server import Request, Response, error_response, text_response

MAX_STATUS_LINE = 1024


class ProbersError(ValueError):
    """``TULLE_APP_PROBERS`` is not what the injector writes; the message says where."""


@dataclass(frozen=True)
class AppProbe:
    """One original kubelet HTTP probe of the app."""

    path: str
    port: int
    https: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 1.0


def parse_probers(text: str) -> dict[str, AppProbe]:
    """The probes in ``text`` (``{"/app-health/web/readyz": {"httpGet": {...},
    "timeoutSeconds": 1}, ...}``), by the health listener's path; ProbersError says which
    entry is wrong."""
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as error:
        raise ProbersError(f"not JSON: {error}") from None
    if not isinstance(data, dict):
        raise ProbersError("not a JSON object of probes by path")
    return {path: _probe(path, entry) for path, entry in data.items()}


def _probe(path: str, entry: Any) -> AppProbe:
    if not path.startswith("/app-health/") or path.count("/") != 3:
        raise ProbersError(f"{path!r}: not /app-health/<container>/<probe>")
    get = entry.get("httpGet") if isinstance(entry, dict) else None
    if not isinstance(get, dict):
        raise ProbersError(f"{path}: no httpGet")
    port = get.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ProbersError(f"{path}: httpGet.port {port!r} is not a port number")
    target = get.get("path", "/")
    scheme = str(get.get("scheme", "HTTP")).upper()
    if scheme not in ("HTTP", "HTTPS"):
        raise ProbersError(f"{path}: httpGet.scheme {scheme!r} is not HTTP or HTTPS")
    headers = []
    for header in get.get("httpHeaders") or ():
        name = header.get("name") if isinstance(header, dict) else None
        value = header.get("value", "") if isinstance(header, dict) else None
        if not isinstance(name, str) or not isinstance(value, str) or not name:
            raise ProbersError(f"{path}: httpHeaders: {header!r} is not a name and a value")
        headers.append((name, value))
    timeout = entry.get("timeoutSeconds", 1)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        raise ProbersError(f"{path}: timeoutSeconds {timeout!r} is not a positive number")
    texts = [target, *(part for pair in headers for part in pair)]
    if not isinstance(target, str) or not target.startswith("/") or _unsafe(texts):
        raise ProbersError(f"{path}: httpGet path or header holds a line break or space")
    return AppProbe(target, port, scheme == "HTTPS", tuple(headers), float(timeout))


def _unsafe(texts: list[Any]) -> bool:
    """Whether any text could break out of its place in the request head."""
    return any(not isinstance(t, str) or any(c in t for c in "\r\n\0") for t in texts) or (
        " " in texts[0]
    )


class HealthHandler:
    """``GET /ready`` and ``GET /app-health/<container>/<probe>``; nothing else."""

    def __init__(self, readiness: Callable[[], str | None], probes: dict[str, AppProbe]) -> None:
        self.readiness = readiness
        self.probes = probes

    async def __call__(self, request: Request) -> Response:
        if request.method != "GET":
            response = error_response(
                405, f"the health listener is read-only: GET only, not {request.method}"
            )
            response.headers["allow"] = "GET"
            return response
        if request.path == "/ready":
            reason = self.readiness()
            return text_response("LIVE\n") if reason is None else text_response(f"{reason}\n", 503)
        probe = self.probes.get(request.path)
        if probe is None:
            return error_response(404, f"no such probe: {request.path}")
        failure = await probe_app(probe)
        if failure is None:
            return text_response("OK\n")
        return text_response(f"{failure}\n", 503)


async def probe_app(probe: AppProbe, host: str = "127.0.0.1") -> str | None:
    """Perform ``probe`` against the app as the kubelet would: None when it answers 200-399,
    else why not."""
    target = f"{'https' if probe.https else 'http'}://{host}:{probe.port}{probe.path}"
    try:
        async with asyncio.timeout(probe.timeout):
            status = await _status(probe, host)
    except TimeoutError:
        return f"{target}: no answer within {probe.timeout:g}s"
    except (OSError, ValueError) as error:
        return f"{target}: {error}"
    if 200 <= status < 400:
        return None
    return f"{target}: answered {status}"


async def _status(probe: AppProbe, host: str) -> int:
    context: ssl.SSLContext | None = None
    if probe.https:  # as the kubelet: no certificate check
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(host, probe.port, ssl=context)
    try:
        headers = {"host": f"{host}:{probe.port}", "user-agent": "kube-probe/tulle",
                   "accept": "*/*", "connection": "close"}  # fmt: skip
        names = {"host": "Host", "user-agent": "User-Agent", "accept": "Accept",
                 "connection": "Connection"}  # fmt: skip
        for name, value in probe.headers:
            headers[name.lower()] = value
            names[name.lower()] = name
        head = f"GET {probe.path} HTTP/1.1\r\n" + "".join(
            f"{names[key]}: {value}\r\n" for key, value in headers.items()
        )
        writer.write(f"{head}\r\n".encode("latin-1"))
        await writer.drain()
        line = await reader.readline()
        parts = line[:MAX_STATUS_LINE].split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            shown = line[:80].decode("latin-1") if line else "nothing"
            raise ValueError(f"not an HTTP response: {shown!r}")
        return int(parts[1])
    finally:
        writer.close()
