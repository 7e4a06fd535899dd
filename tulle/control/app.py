"""The control-plane process: wires config sources, registry, snapshots, translation, the ADS
server and the HTTP API together, and pushes a new snapshot (debounced) after every change."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from tulle.api.model import MeshModel
from tulle.api.normalize import build_model
from tulle.control.api import ApiHandler
from tulle.control.config import ChangeResult, ConfigSources
from tulle.control.registry import Endpoint, LocalRegistry
from tulle.control.snapshot import Snapshot, build_snapshot
from tulle.control.store import ResourceKey, StateStore
from tulle.control.translate import Resources, Translator
from tulle.transport.http_server import serve_http
from tulle.xds.node import NodeInfo
from tulle.xds.server import AdsServer, start_server

log = logging.getLogger(__name__)

FILE_POLL_SECONDS = 0.5
DEBOUNCE_SECONDS = 0.05


class ControlPlane:
    """Config + registry → snapshots → xDS for every node, and the HTTP API."""

    def __init__(
        self,
        paths: Sequence[Path],
        state_dir: Path,
        host: str = "127.0.0.1",
        xds_port: int = 15010,
        http_port: int = 15014,
    ) -> None:
        self.host, self.xds_port, self.http_port = host, xds_port, http_port
        self.store = StateStore(state_dir)
        self.registry = LocalRegistry(
            self.store.endpoints(), self.store.save_endpoint, self.store.delete_endpoint
        )
        self.config = ConfigSources(
            list(paths),
            self.store,
            known_hosts=lambda: {e.service for e in self.registry.endpoints()},
        )
        self.translator = Translator()
        self.ads = AdsServer(self)
        self.snapshot: Snapshot = build_snapshot(0, build_model(()), ())
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._grpc: grpc.aio.Server | None = None
        self._http: asyncio.Server | None = None

    # --- the snapshot ---------------------------------------------------------------------

    def _model(self) -> MeshModel:
        validation = self.config.validation
        if validation is None or validation.model is None:
            return build_model(())
        return validation.model

    def rebuild(self) -> None:
        """Build a new snapshot from the config in force and the registry."""
        self.snapshot = build_snapshot(
            self.snapshot.version + 1, self._model(), self.registry.endpoints()
        )

    def node_resources(self, node: NodeInfo) -> Resources:
        """Every resource for ``node`` under the current snapshot."""
        return self.translator.resources(self.snapshot, node)

    def resources(self, node: NodeInfo, type_url: str) -> Any:
        """:class:`~tulle.xds.server.ResourceSource` for the ADS server."""
        return self.node_resources(node).get(type_url, {})

    def changed(self) -> None:
        """Something changed: push a new snapshot soon (a burst makes one push)."""
        self._changed.set()

    @property
    def push_pending(self) -> bool:
        """A change is waiting for its snapshot (nodes cannot be current until it is built)."""
        return self._changed.is_set()

    # --- changes --------------------------------------------------------------------------

    def apply(self, text: str, filename: str) -> ChangeResult:
        """Apply YAML text; see :meth:`ConfigSources.apply`."""
        result = self.config.apply(text, filename)
        if result.accepted and (result.created or result.updated):
            self.changed()
        return result

    def delete(self, key: ResourceKey) -> ChangeResult:
        """Delete an applied resource."""
        result = self.config.delete(key)
        if result.accepted:
            self.changed()
        return result

    def register(self, endpoint: Endpoint) -> bool:
        """Register (or update) an endpoint."""
        changed = self.registry.register(endpoint)
        if changed:
            self.config.revalidate()
            self.changed()
        return changed

    def deregister(self, endpoint_id: str) -> bool:
        """Deregister an endpoint."""
        removed = self.registry.deregister(endpoint_id)
        if removed:
            self.config.revalidate()
            self.changed()
        return removed

    # --- running --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load config, then serve xDS and the API."""
        self.config.load()
        for finding in self.config.file_findings:
            log.warning("%s", finding.format())
        self.rebuild()
        self._grpc, self.xds_port = await start_server(self.ads, self.host, self.xds_port)
        self._http = await serve_http(ApiHandler(self), self.host, self.http_port)
        self.http_port = self._http.sockets[0].getsockname()[1]
        self._tasks = [
            asyncio.create_task(self._push_loop()),
            asyncio.create_task(self._watch_loop()),
        ]
        log.info(
            "xDS on %s:%d, API on http://%s:%d", self.host, self.xds_port, self.host, self.http_port
        )

    async def _push_loop(self) -> None:
        while True:
            await self._changed.wait()
            await asyncio.sleep(DEBOUNCE_SECONDS)
            self._changed.clear()
            self.rebuild()
            self.ads.push()

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(FILE_POLL_SECONDS)
            if self.config.poll_files():
                log.info("config files changed; pushing")
                self.changed()

    async def stop(self, grace: float = 1.0) -> None:
        """Stop serving and close the store."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            self._http.close()
        if self._grpc is not None:
            await self._grpc.stop(grace)
        self.store.close()
