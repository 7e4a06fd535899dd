"""Inbound mesh features in library mode, shared by the ASGI and WSGI middleware: the app port's
policy from the control plane (authorization, then the rate limit, exactly as a sidecar's inbound
listener applies them), and the callee's side of the metrics and the access log."""

from __future__ import annotations

import dataclasses
import threading
import time

from tulle.client.inbound_tls import NOT_TERMINATED, port_policy
from tulle.client.registration import Registrar, Registration
from tulle.client.runtime import MeshRuntime, get_runtime
from tulle.client.settings import port_variable
from tulle.codec.paths import PathError, normalize_target
from tulle.engine.errors import MeshError
from tulle.engine.inbound import InboundPolicy, refusal
from tulle.engine.message import Request, Response, finished, mesh_response
from tulle.obs.tracing import SERVER

LISTENER = "inbound"  # the access log's listener field, as a sidecar's inbound side logs it
KUBELET_PROBE = "kube-probe/"
"""How a kubelet's probes name themselves (``User-Agent: kube-probe/1.31``): they get no span,
as under a sidecar, which answers them itself."""


class ServedRequest(Request):
    """A request the app serves; its body goes to the app, so only its size is kept."""

    received: int = 0
    started: float = 0.0  # wall clock, for the access log

    @property
    def body_size(self) -> int:
        """Bytes of body the app has read."""
        return self.received


class InboundGate:
    """Admits requests to the app by its port's inbound policy and records each one."""

    def __init__(
        self,
        runtime: MeshRuntime | None = None,
        port: int | None = None,
        service: str | None = None,
        service_port: int | None = None,
        labels: dict[str, str] | None = None,
    ) -> None:
        self.runtime = runtime or get_runtime()
        self.port = port if port is not None else port_variable("PORT", lowest=1)
        settings = self.runtime.settings
        self._registration = Registration.load(
            self.runtime.node, settings.server, service, port, service_port, labels,
            settings.token_file,
        )  # fmt: skip
        self._registrar: Registrar | None = None
        self.runtime.on_mtls_server(self._mtls_declared)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Register the app's endpoint (when a service is named; see Registration.load)."""
        registration = self._current_registration()
        if registration is not None and self._registrar is None:
            registrar = self._registrar = Registrar(registration)
            registrar.start()
            now = self._current_registration()  # a server declared itself meanwhile
            if now is not None and now != registration:
                registrar.update(now)

    def _current_registration(self) -> Registration | None:
        """The registration, marked as in the mesh (``tlsMode: istio``) when the app has a
        workload identity and a server of this process terminates mTLS."""
        registration = self._registration
        if registration is None:
            return None
        runtime = self.runtime
        mtls = runtime.terminates_mtls and runtime.inbound_tls.has_identity
        return dataclasses.replace(registration, mtls=mtls)

    def _mtls_declared(self) -> None:
        """Tulle's mTLS server started after the app registered (a WSGI app is registered
        when its middleware is made): send the registration again with the label, off the
        caller's thread (it may be an event loop)."""
        registrar, registration = self._registrar, self._current_registration()
        if registrar is None or registration is None:
            return
        threading.Thread(
            target=registrar.update, args=(registration,), name="tulle-register", daemon=True
        ).start()

    @property
    def registered(self) -> bool:
        """Whether the app's endpoint is in the control plane's registry now."""
        return self._registrar is not None and self._registrar.registered

    def stop(self) -> None:
        """Deregister the app's endpoint and write out the access log's pending entries: a
        server may end the process by a signal right after (uvicorn re-raises SIGTERM), when
        no exit handler runs."""
        registrar, self._registrar = self._registrar, None
        if registrar is not None:
            registrar.stop()
        self.runtime.log.flush()
        exporter = self.runtime.tracing.exporter
        if exporter is not None:  # the spans still queued, likewise
            exporter.flush()

    # --- per request --------------------------------------------------------------------------

    def policy(self, served_port: int) -> tuple[int, InboundPolicy | None]:
        """The app port a request came to and that port's policy: the configured port, else
        the port the server listens on; a workload with one port has that port's policy."""
        return port_policy(self.runtime.inbound, self.port or served_port)

    def admit(
        self, request: ServedRequest, served_port: int, terminated: bool = True
    ) -> tuple[str, Response | None]:
        """The service the app serves the request as, and the mesh's refusal (403 denied, 429
        rate limited) when the policy refuses it, else None. ``terminated``: the request came
        through Tulle's mTLS server; a STRICT port refuses a request that did not (plain text
        the server could not tell from mTLS), counted and logged as a plain-text refusal."""
        request.started = time.time()
        tracer = self.runtime.tracing.tracer
        if tracer is not None and not _probe(request):  # the server span, when sampled
            request.span = tracer.start(request.headers, SERVER)  # (the app sees its context)
        port, policy = self.policy(served_port)
        if policy is None:
            return "", None
        if not terminated and policy.mode == "STRICT":
            self.runtime.inbound_tls.refused(request.source_ip or "?", NOT_TERMINATED)
            return policy.service, mesh_response(MeshError(403, "RBAC", NOT_TERMINATED))
        # The policy sees the path normalized, as the sidecar's does (the app's server may
        # have decoded escapes already; dot segments and the rest are left to it).
        try:
            request.path = normalize_target(request.path, self.runtime.paths)
        except PathError as error:
            return policy.service, mesh_response(MeshError(400, "DPE", f"bad request: {error}"))
        with self.runtime.inbound_lock:
            refused = refusal(policy, request, port, time.monotonic())
        if refused is None:
            return policy.service, None
        return policy.service, mesh_response(refused, request.is_grpc)

    def record(self, request: ServedRequest, service: str, response: Response, sent: int) -> None:
        """Metrics (``reporter="destination"``) and the access log for one served request."""
        runtime = self.runtime
        done = finished(LISTENER, request, response, request.started, time.time(), sent, service)
        runtime.metrics.record(done)
        runtime.log.record(done)
        if done.span is not None:
            runtime.tracing.record(done)
        tap = runtime.tap
        if tap.active:
            tap.publish(done)


def _probe(request: Request) -> bool:
    """Whether ``request`` is a kubelet's probe (:data:`KUBELET_PROBE`)."""
    agent = request.header("user-agent")
    return agent is not None and agent.startswith(KUBELET_PROBE)
