"""The trace context an app served in library mode sees: its server span's, as a sidecar puts
it in the request it hands the app (tulle.obs.tracing), in an ASGI scope's headers or a WSGI
environ. The app passes it on to the calls it makes (as with a sidecar), so their client
spans are children of its server span."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from tulle.obs.tracing import TRACE_HEADERS, Span

_ENVIRON_KEYS = {f"HTTP_{name.upper().replace('-', '_')}": name for name in TRACE_HEADERS}


def traced_scope(scope: MutableMapping[str, Any], span: Span | None) -> MutableMapping[str, Any]:
    """``scope`` with the span's context in its headers (a copy), or itself when the request
    is traced by nobody (``span`` None)."""
    if span is None:
        return scope
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
    headers = span.inject(headers)
    encoded = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    return {**scope, "headers": encoded}


def traced_environ(environ: MutableMapping[str, Any], span: Span | None) -> None:
    """The span's context in a WSGI ``environ`` (changed in place)."""
    if span is None:
        return
    current = [(name, environ[key]) for key, name in _ENVIRON_KEYS.items() if key in environ]
    for key in _ENVIRON_KEYS:
        environ.pop(key, None)
    for name, value in span.inject(current):
        key = f"HTTP_{name.upper().replace('-', '_')}"
        environ[key] = f"{environ[key]},{value}" if key in environ else value
