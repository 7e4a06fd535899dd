"""What happens to a traced request, as its span keeps it until export: each attempt (an
:class:`Attempt`, written as an ``attempt`` event) and other events (a fallback)."""

from __future__ import annotations

AttributeValue = str | int | float | bool
Event = tuple[float, str, list[tuple[str, AttributeValue]]]
"""An event of a span: its time (wall-clock seconds), its name and its attributes."""


class Attempt:
    """An attempt of a client span's request, as the engine saw it end: ``ended`` and
    ``started`` (wall-clock seconds), its ``number`` (1 for the first), the ``endpoint`` it went
    to, the ``status`` of its answer (0: none came), else the ``error`` kind and the ``reason``,
    and whether it is ``retried``. Kept as it is (one object, made on the request path) and
    written as an ``attempt`` event when the span is exported (:meth:`event`)."""

    __slots__ = ("ended", "endpoint", "error", "number", "reason", "retried", "started", "status")

    def __init__(
        self,
        ended: float,
        started: float,
        number: int,
        endpoint: str,
        status: int,
        error: str,
        reason: str,
        retried: bool,
    ) -> None:
        self.ended, self.started, self.number, self.endpoint = ended, started, number, endpoint
        self.status, self.error, self.reason, self.retried = status, error, reason, retried

    def key(self) -> tuple[int, str, int, str, str, bool]:
        """All but its times: what repeats from request to request."""
        return self.number, self.endpoint, self.status, self.error, self.reason, self.retried

    def event(self) -> Event:
        """The ``attempt`` event it is: :func:`attempt_attributes` and ``tulle.duration_ms``."""
        duration = ("tulle.duration_ms", duration_ms(self.started, self.ended))
        return self.ended, "attempt", [*attempt_attributes(self.key()), duration]


def duration_ms(started: float, ended: float) -> float:
    """From ``started`` to ``ended`` (seconds) in milliseconds, to the microsecond."""
    return int((ended - started) * 1e6 + 0.5) / 1000


def attempt_attributes(
    key: tuple[int, str, int, str, str, bool],
) -> list[tuple[str, AttributeValue]]:
    """An attempt's event's attributes but its duration, from its :meth:`Attempt.key`: its
    number, the endpoint, how it ended (a status, or the kind of failure and why), whether it
    is retried."""
    number, endpoint, status, error, reason, retried = key
    attributes: list[tuple[str, AttributeValue]] = [
        ("tulle.attempt", number), ("tulle.upstream_endpoint", endpoint),
    ]  # fmt: skip
    if error:
        attributes += [("error.type", error), ("tulle.reason", reason)]
    else:
        attributes.append(("http.response.status_code", status))
    attributes.append(("tulle.retried", retried))
    return attributes


def event_of(event: Attempt | Event) -> Event:
    """Any event of a span as (time, name, attributes)."""
    return event.event() if isinstance(event, Attempt) else event
