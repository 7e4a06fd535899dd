"""The state store: config applied over the API and registered endpoints, in SQLite, so that a
restart of the control plane loses nothing."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from tulle.control.registry import Endpoint, endpoint_from_dict

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS endpoints (id TEXT PRIMARY KEY, body TEXT NOT NULL);
"""

ResourceKey = tuple[str, str, str]

log = logging.getLogger(__name__)


class StateStore:
    """Applied resources (as their JSON data) and endpoints, in ``<state-dir>/state.db``."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "state.db"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def resources(self) -> dict[ResourceKey, dict[str, Any]]:
        """Every applied resource by (kind, namespace, name)."""
        with self._lock:
            rows = self._db.execute("SELECT kind, namespace, name, body FROM resources").fetchall()
        return {(k, ns, n): json.loads(body) for k, ns, n, body in rows}

    def replace_resources(
        self, upserts: dict[ResourceKey, dict[str, Any]], deletes: list[ResourceKey]
    ) -> None:
        """Apply one change atomically."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for key, body in upserts.items():
                    self._db.execute(
                        "INSERT OR REPLACE INTO resources VALUES (?, ?, ?, ?)",
                        (*key, json.dumps(body, sort_keys=True)),
                    )
                for key in deletes:
                    self._db.execute(
                        "DELETE FROM resources WHERE kind=? AND namespace=? AND name=?", key
                    )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def endpoints(self) -> tuple[Endpoint, ...]:
        """Every stored endpoint that is still a valid registration. One stored by an older
        version that checked less (an address of ``0.0.0.0``, say) is logged and left out, so
        that a stricter check never keeps the control plane from starting."""
        with self._lock:
            rows = self._db.execute("SELECT id, body FROM endpoints ORDER BY rowid").fetchall()
        endpoints = []
        for endpoint_id, body in rows:
            try:
                endpoints.append(_endpoint(json.loads(body)))
            except (ValueError, KeyError, TypeError) as error:
                log.warning("stored endpoint %s left out: %s", endpoint_id, error)
        return tuple(endpoints)

    def save_endpoint(self, endpoint: Endpoint) -> None:
        """Store (or replace) an endpoint."""
        body = json.dumps(endpoint.to_dict(), sort_keys=True)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO endpoints VALUES (?, ?)", (endpoint.id, body))

    def delete_endpoint(self, endpoint_id: str) -> None:
        """Forget an endpoint."""
        with self._lock:
            self._db.execute("DELETE FROM endpoints WHERE id=?", (endpoint_id,))


def _endpoint(data: dict[str, Any]) -> Endpoint:
    return endpoint_from_dict(
        {
            "service": data["service"],
            "address": data["address"],
            "port": data["port"],
            "servicePort": data.get("service_port"),
            "protocol": data.get("protocol", "HTTP"),
            "labels": data.get("labels", {}),
            "serviceAccount": data.get("service_account", "default"),
            "locality": data.get("locality", ""),
            "healthy": data.get("healthy", True),
            "workload": data.get("workload", ""),
        }
    )
