"""``tulle traces``: recent traces from the control plane's trace store, or one as a text
waterfall (``tulle traces TRACE_ID``). Reads ``GET /api/v1/traces`` like any client, with the
admin token as the other commands do (docs/observability.md)."""

from __future__ import annotations

import json
import time
from contextlib import closing
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import typer

from tulle.cli.client import DEFAULT_SERVER, ServerOption, TokenOption, fail, report_error
from tulle.cli.cluster import (
    ContextOption,
    KubeconfigOption,
    KubeOption,
    NamespaceOption,
    connect_by_options,
)

BAR_WIDTH = 40


class TraceStatus(StrEnum):
    """A trace's status filter."""

    ok = "ok"
    error = "error"


class TraceFormat(StrEnum):
    """How ``tulle traces`` prints."""

    text = "text"
    json = "json"


def _seconds(option: str, text: str | None) -> float | None:
    from tulle.api.durations import parse_duration

    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as error:
        raise fail(f"error: {option}: {error}", 2) from None


def traces(
    trace_id: Annotated[
        str | None,
        typer.Argument(help="A trace id (32 hex digits): print that trace as a waterfall."),
    ] = None,
    service: Annotated[
        str | None,
        typer.Option(
            help="Only traces with a span of this service: a workload (catalog-v1) or the "
            "mesh service it serves (catalog)."
        ),
    ] = None,
    status: Annotated[
        TraceStatus | None, typer.Option(help="Only traces that failed (error) or did not (ok).")
    ] = None,
    min_duration: Annotated[
        str | None, typer.Option(help="Only traces at least this long (e.g. 100ms, 1.5s).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only traces started within this long ago (e.g. 5m).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many traces.")] = 20,
    output: Annotated[TraceFormat, typer.Option("-o", "--output")] = TraceFormat.text,
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
    kube: KubeOption = False,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Recent traces (root service and span, duration, spans, status), newest first; with a
    TRACE_ID, that trace's spans as a waterfall."""
    params: dict[str, Any] = {"limit": limit}
    if service:
        params["service"] = service
    if status is not None:
        params["status"] = status.value
    if (minimum := _seconds("--min-duration", min_duration)) is not None:
        params["minDurationMs"] = minimum * 1000
    if (window := _seconds("--since", since)) is not None:
        params["since"] = time.time() - window
    with closing(connect_by_options(server, token, kube, context, kubeconfig, namespace)) as api:
        if trace_id is None:
            code, data = api.call("GET", "/api/v1/traces", params=params)
        else:
            code, data = api.call("GET", f"/api/v1/traces/{trace_id.strip().lower()}")
    if code != 200:
        raise report_error(code, data)
    if output is TraceFormat.json:
        typer.echo(json.dumps(data, indent=2))
    elif trace_id is None:
        typer.echo(trace_table(data["traces"]), nl=False)
    else:
        typer.echo(waterfall(data), nl=False)


def _duration(ms: float) -> str:
    return f"{ms / 1000:.2f}s" if ms >= 1000 else f"{ms:.1f}ms"


def trace_table(rows: list[dict[str, Any]]) -> str:
    """The trace list as a table, one trace a line."""
    if not rows:
        return "no traces match (the store keeps the last spans the mesh sampled)\n"
    header = ("TRACE ID", "STARTED", "SERVICE", "ROOT SPAN", "DURATION", "SPANS", "STATUS")
    lines = [header]
    for row in rows:
        started = datetime.fromtimestamp(row["start"]).strftime("%H:%M:%S.%f")[:-3]
        status = row["status"] if row["status"] == "ok" else f"error ({row['errorCount']})"
        root = row["rootName"] if row["complete"] else f"{row['rootName']} (root not received)"
        lines.append((row["traceId"], started, row["rootService"], root,
                      _duration(row["durationMs"]), str(row["spanCount"]), status))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        + "\n"
        for line in lines
    )


def waterfall(trace: dict[str, Any]) -> str:
    """One trace: a heading, then each span indented under its parent, with a bar where it
    ran in the trace's time, its duration and its status; events (retries) under it."""
    total = trace["durationMs"] or 1e-9
    failed = trace["errorCount"]
    status = "ok" if not failed else f"error ({failed} failed span{'s' if failed > 1 else ''})"
    lines = [
        f"trace {trace['traceId']}: {trace['spanCount']} spans, "
        f"{len(trace['services'])} services ({', '.join(trace['services'])}), "
        f"{_duration(trace['durationMs'])}, {status}"
    ]
    labels = [f"{'  ' * s['depth']}{s['service']}: {s['name']}" for s in trace["spans"]]
    width = max(map(len, labels), default=0)
    for span, label in zip(trace["spans"], labels, strict=True):
        start = min(BAR_WIDTH - 1, int(span["offsetMs"] / total * BAR_WIDTH))
        length = max(1, round(span["durationMs"] / total * BAR_WIDTH))
        bar = (" " * start + "█" * length)[:BAR_WIDTH].ljust(BAR_WIDTH)
        mark = "" if span["status"] != "error" else "  ERROR"
        orphan = "  (parent not received)" if span.get("missingParent") else ""
        lines.append(f"{label.ljust(width)}  |{bar}| {_duration(span['durationMs']):>9}"
                     f"  {span['kind']}{mark}{orphan}")  # fmt: skip
        indent = " " * (2 * span["depth"] + 4)
        if span["statusMessage"]:
            lines.append(f"{indent}! {span['statusMessage']}")
        for event in span["events"]:
            details = ", ".join(f"{k}={v}" for k, v in event["attributes"].items())
            lines.append(f"{indent}· +{_duration(event['offsetMs'])} {event['name']}"
                         + (f" ({details})" if details else ""))  # fmt: skip
    return "\n".join(lines) + "\n"
