"""Finished requests kept until they are handled a batch at a time (the access log writes them,
the metrics count them): handling a batch in one go costs less than handling each request
among the rest of its work."""

from __future__ import annotations

from typing import Final

from tulle.obs.finished import Finished

BATCH: Final = 64  # kept before a batch is handled (small: a batch's objects are RSS)


class Pending:
    """The records kept so far. ``add`` needs no lock (a list's append is atomic, and the
    library records from whatever threads serve the app); ``take`` returns the records it finds
    and removes just those, so one added meanwhile waits for the next take. Whoever takes
    makes sure two takes do not run at once."""

    __slots__ = ("records",)

    def __init__(self) -> None:
        self.records: list[Finished] = []

    def add(self, done: Finished) -> bool:
        """Keep ``done``; whether a batch is now full."""
        records = self.records
        records.append(done)
        return len(records) >= BATCH

    def take(self) -> list[Finished]:
        """The records kept so far, no longer kept."""
        records = self.records
        count = len(records)
        taken = records[:count]
        del records[:count]
        return taken
