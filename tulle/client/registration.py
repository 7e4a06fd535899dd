"""A library-mode app's endpoint in the service registry: registered with the control plane's
HTTP API when the app starts, deregistered when it stops (what a sidecar's runner or Kubernetes
does for a sidecar-mode workload). Until the control plane answers, registration is retried in
the background, so an app that starts first still joins the mesh."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tulle.client.settings import SettingsError, port_variable
from tulle.security.tokens import read_token_file
from tulle.xds.node import NodeInfo

log = logging.getLogger("tulle.client")

RETRY_SECONDS = 2.0
TLS_MODE_LABEL = "security.istio.io/tlsMode"


@dataclass(frozen=True)
class Registration:
    """The endpoint a library-mode app serves: which service, where, and who it is."""

    server: str
    service: str
    namespace: str
    address: str
    port: int
    workload: str
    service_port: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    protocol: str = "HTTP"
    mtls: bool = False  # the app's server terminates mTLS with the workload's certificate
    token_file: str | None = None  # the workload's bootstrap token (else TULLE_TOKEN_FILE)
    locality: str = ""  # region[/zone[/subzone]] (TULLE_LOCALITY), for locality load balancing

    @classmethod
    def load(
        cls,
        node: NodeInfo,
        server: str,
        service: str | None = None,
        port: int | None = None,
        service_port: int | None = None,
        labels: dict[str, str] | None = None,
        token_file: str | None = None,
    ) -> Registration | None:
        """Arguments first, then ``TULLE_SERVICE``, ``PORT``, ``TULLE_SERVICE_PORT``,
        ``TULLE_LABELS`` (``k=v,k=v``) and ``TULLE_LOCALITY``; None when no service is named
        (nothing to register)."""
        env = os.environ
        service = service or env.get("TULLE_SERVICE")
        if not service:
            return None
        port = port or port_variable("PORT", lowest=1)
        if port is None:
            raise SettingsError(
                f"TULLE_SERVICE={service!r} needs the app's port: pass port= or set PORT"
            )
        return cls(
            server=server,
            service=service,
            namespace=node.namespace,
            address=node.ip,
            port=port,
            workload=node.workload,
            service_port=service_port or port_variable("TULLE_SERVICE_PORT", lowest=1),
            labels=labels if labels is not None else _labels(env.get("TULLE_LABELS", "")),
            token_file=token_file,
            locality=env.get("TULLE_LOCALITY", ""),
        )

    def body(self) -> dict[str, Any]:
        """The registration as the control plane's ``/api/v1/endpoints`` takes it. An app whose
        server terminates mTLS with its own certificate (``mtls``) carries Istio's
        ``security.istio.io/tlsMode: istio`` label, so sidecars and other library apps speak
        mTLS to it (auto mTLS); without it its callers use plain text."""
        labels = dict(self.labels)
        if self.mtls:
            labels[TLS_MODE_LABEL] = "istio"
        data: dict[str, Any] = {
            "service": self.service, "namespace": self.namespace, "address": self.address,
            "port": self.port, "workload": self.workload, "labels": labels,
            "protocol": self.protocol,
        }  # fmt: skip
        if self.service_port is not None:
            data["servicePort"] = self.service_port
        if self.locality:  # the control plane checks it (region[/zone[/subzone]])
            data["locality"] = self.locality
        return data

    def send(self, method: str) -> None:
        """POST (register) or DELETE (deregister); RegistrationError says why not. The
        workload's token (the file ``TULLE_TOKEN_FILE`` names) proves who registers."""
        url = self.server.rstrip("/") + "/api/v1/endpoints"
        headers = {}
        token_file = self.token_file or os.environ.get("TULLE_TOKEN_FILE")
        if token_file:
            try:
                headers["authorization"] = f"Bearer {read_token_file(Path(token_file))}"
            except (OSError, ValueError) as error:
                raise RegistrationError(f"TULLE_TOKEN_FILE: {error}") from None
        try:
            response = httpx.request(method, url, json=self.body(), headers=headers, timeout=5.0)
        except httpx.HTTPError as error:
            raise RegistrationError(f"control plane at {self.server}: {error}") from None
        if response.status_code != 200:
            raise RegistrationError(
                f"control plane at {self.server} answered {response.status_code}: "
                f"{response.text.strip()}"
            )


class RegistrationError(Exception):
    """The control plane did not take a registration; the message says which and why."""


class Registrar:
    """Keeps one registration in the registry while the app runs."""

    def __init__(self, registration: Registration) -> None:
        self.registration = registration
        self.registered = False
        self._stopping = threading.Event()
        self._retrying: threading.Thread | None = None

    def start(self) -> None:
        """Register now; when the control plane cannot take it, keep trying in the
        background (a warning says why)."""
        if self._try():
            return
        self._retrying = threading.Thread(target=self._retry, name="tulle-register", daemon=True)
        self._retrying.start()

    def update(self, registration: Registration) -> None:
        """Replace the registration (the same endpoint, new labels): re-sent now when it is in
        the registry (a POST replaces it), else by the retries under way."""
        self.registration = registration
        if self.registered and not self._stopping.is_set():
            self._try()

    def _try(self) -> bool:
        try:
            self.registration.send("POST")
        except RegistrationError as error:
            log.warning(
                "tulle: registering %s:%s as %s failed (retrying every %gs): %s",
                self.registration.address, self.registration.port, self.registration.service,
                RETRY_SECONDS, error,
            )  # fmt: skip
            return False
        self.registered = True
        return True

    def _retry(self) -> None:
        while not self._stopping.wait(RETRY_SECONDS):
            if self._try():
                return

    def stop(self) -> None:
        """Stop retrying and remove the endpoint from the registry."""
        self._stopping.set()
        if self._retrying is not None:
            self._retrying.join(10)  # an attempt in flight ends within its 5 s timeout
        registered, self.registered = self.registered, False
        if registered:
            try:
                self.registration.send("DELETE")
            except RegistrationError as error:
                log.warning("tulle: deregistering %s failed: %s", self.registration.service, error)


def _labels(text: str) -> dict[str, str]:
    labels = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SettingsError(f"TULLE_LABELS: {item!r} is not key=value")
        labels[key.strip()] = value.strip()
    return labels
