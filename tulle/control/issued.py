"""What the mesh CA last issued to each replica (serial, validity, the root its leaf chains to,
the roots of the bundle sent with it), kept in the state directory so that a restarted control
plane still knows who holds what: root rotation waits on these records, and without them every
step after a restart would wait for each workload's next half-life renewal.

The file (``issued-certificates.json``, 0600: it says which workloads exist) is rewritten
atomically at each issue; records of expired certificates are dropped then."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tulle.security.files import write_atomically

log = logging.getLogger(__name__)

ISSUED_FILE = "issued-certificates.json"


class IssuedRecords(dict[str, dict[str, Any]]):
    """Replica → its last certificate's record; :meth:`put` records and saves."""

    def __init__(self, path: Path | None = None) -> None:
        super().__init__()
        self.path = path
        self._lock = threading.Lock()  # signing runs in threads
        if path is not None:
            self.update(_read(path))

    def put(self, replica: str, record: dict[str, Any]) -> None:
        """Record ``replica``'s new certificate, and save every record still valid."""
        with self._lock:
            self[replica] = record
            now = datetime.now(UTC)
            for name in [n for n, r in self.items() if _expired(r, now)]:
                del self[name]
            if self.path is not None:
                data = json.dumps(dict(self), indent=1, sort_keys=True) + "\n"
                write_atomically(self.path, data.encode())


def _expired(record: dict[str, Any], now: datetime) -> bool:
    try:
        return datetime.fromisoformat(str(record["notAfter"])) <= now
    except (KeyError, ValueError):
        return True


def _read(path: Path) -> dict[str, dict[str, Any]]:
    """The records saved in ``path`` that are still valid; none (logged) when it is unreadable."""
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        log.warning("%s cannot be read (%s): the CA starts without its records", path, error)
        return {}
    if not isinstance(saved, dict):
        log.warning("%s is not a JSON object: the CA starts without its records", path)
        return {}
    now = datetime.now(UTC)
    return {
        str(name): record
        for name, record in saved.items()
        if isinstance(record, dict) and not _expired(record, now)
    }
