"""The admission webhooks' AdmissionReview v1 handling, pure: a request document in, a response
document out (the listener is :mod:`tulle.control.webhook`).

``/inject`` (mutating) answers a Pod's creation with the JSON Patch from the pod the API server
has to what ``tulle inject`` makes of it: the same pure function (:func:`tulle.inject.inject`)
and its patch function (:func:`tulle.inject.json_patch`), with the mesh settings the control
plane was started with. ``/validate`` (:mod:`tulle.control.admission_validate`) refuses a config
resource that ``tulle validate`` would refuse.

The webhooks fail closed (``failurePolicy: Fail``): what cannot be processed is answered
``allowed: false`` with a message a person can act on. A body that is not an AdmissionReview at
all is a :class:`ReviewError` (HTTP 400 for the listener)."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tulle.inject import InjectError, MeshSettings, inject, json_patch
from tulle.inject.annotations import read_options
from tulle.inject.pod import is_injected

log = logging.getLogger(__name__)

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
NEVER_INJECTED = "kube-system"
"""Besides the control plane's own namespace."""


class ReviewError(ValueError):
    """A body that is not an AdmissionReview v1 request (the message says what is wrong)."""


@dataclass(frozen=True)
class Review:
    """The parts of ``request`` the webhooks read (the rest is passed on as ``raw``)."""

    uid: str
    operation: str
    group: str
    version: str
    kind: str
    namespace: str
    name: str
    object: Any
    raw: dict[str, Any]


def parse_review(body: bytes) -> Review:
    """The request of an AdmissionReview v1 body; ReviewError names what is missing."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReviewError(f"the body is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ReviewError("the body is not a JSON object (an AdmissionReview)")
    if document.get("apiVersion") != API_VERSION or document.get("kind") != KIND:
        raise ReviewError(
            f"expected apiVersion {API_VERSION} and kind {KIND}, got "
            f"{document.get('apiVersion')!r} and {document.get('kind')!r} (the webhook "
            "configurations must say admissionReviewVersions: [v1])"
        )
    request = document.get("request")
    if not isinstance(request, dict):
        raise ReviewError("request: missing or not an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("request.uid: missing or not a string")
    kind = request.get("kind")
    if not isinstance(kind, dict) or not isinstance(kind.get("kind"), str):
        raise ReviewError("request.kind: missing or not a {group, version, kind} object")
    operation = request.get("operation")
    if not isinstance(operation, str):
        raise ReviewError("request.operation: missing or not a string")
    return Review(
        uid=uid,
        operation=operation,
        group=str(kind.get("group") or ""),
        version=str(kind.get("version") or ""),
        kind=kind["kind"],
        namespace=str(request.get("namespace") or ""),
        name=str(request.get("name") or ""),
        object=request.get("object"),
        raw=request,
    )


def respond(
    uid: str,
    allowed: bool,
    message: str = "",
    *,
    patch: list[dict[str, Any]] | None = None,
    warnings: tuple[str, ...] | list[str] = (),
    code: int | None = None,
) -> dict[str, Any]:
    """An AdmissionReview v1 response for request ``uid``."""
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    status: dict[str, Any] = {}
    if message:
        status["message"] = message
    if code is not None:
        status["code"] = code
    if status:
        response["status"] = status
    if warnings:
        response["warnings"] = list(warnings)
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def refused(review: Review, message: str, code: int = 400) -> dict[str, Any]:
    """``allowed: false`` with ``message`` (the API server shows it to whoever made the call)."""
    return respond(review.uid, False, message, code=code)


Handler = Callable[[Review], dict[str, Any]]


def answer(body: bytes, handler: Handler) -> dict[str, Any]:
    """The response to an AdmissionReview body; ReviewError for a body that is not one. An
    error of the handler itself is refused (the webhook fails closed), never raised."""
    review = parse_review(body)
    try:
        return handler(review)
    except Exception:
        log.exception("admission review %s (%s %s) failed", review.uid, review.operation,
                      review.kind)  # fmt: skip
        return refused(
            review,
            "the Tulle control plane could not process this request (an internal error, "
            "logged with uid " + review.uid + "); see its log: kubectl logs -n <its namespace> "
            "deploy/tulle-controlplane",
            code=500,
        )


class Injector:
    """``/inject``: a Pod about to be created gets the sidecar (or the library settings)."""

    def __init__(self, settings: MeshSettings, own_namespace: str) -> None:
        self.settings = settings
        self.excluded = {NEVER_INJECTED: "kube-system", own_namespace: "the control plane's own"}

    def __call__(self, review: Review) -> dict[str, Any]:
        if review.group or review.kind != "Pod" or review.operation != "CREATE":
            what = f"{review.operation} of {review.group or 'core'}/{review.kind}"
            message = f"not injected: the injector only handles Pod creation, not a {what}"
            return respond(review.uid, True, message, warnings=[message])
        pod = review.object
        if not isinstance(pod, dict):
            return refused(review, "request.object: the Pod is missing or not an object")
        metadata = pod.get("metadata")
        meta: dict[str, Any] = metadata if isinstance(metadata, dict) else {}
        namespace = review.namespace or str(meta.get("namespace") or "")
        if namespace in self.excluded:
            message = (
                f"not injected: namespace {namespace} is {self.excluded[namespace]} namespace, "
                "which Tulle never injects (even when labelled tulle-injection=enabled)"
            )
            return respond(review.uid, True, message, warnings=[message])
        name = f"Pod {namespace}/{meta.get('name') or meta.get('generateName') or '-'}"
        try:
            injection = inject(pod, self.settings)
        except InjectError as error:
            return refused(
                review,
                f"{name}: cannot inject the Tulle sidecar: {error}. Fix the pod (its "
                "template), or opt it out with the label or annotation "
                'sidecar.tulle.dev/inject: "false"',
            )
        warnings = [_without_object(warning) for warning in injection.warnings]
        if not injection.injected:
            message = f"{name}: not injected: {self._why_not(pod)}"
            return respond(review.uid, True, message, warnings=[*warnings, message])
        patch = json_patch(pod, injection.object)
        return respond(review.uid, True, f"{name}: injected", patch=patch, warnings=warnings)

    def _why_not(self, pod: dict[str, Any]) -> str:
        metadata = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        if is_injected(metadata, spec):
            return "it already carries the sidecar"
        options = read_options(metadata, ("metadata",), self.settings)
        if not options.inject:
            return options.skip_reason or "opted out"
        if spec.get("hostNetwork") is True:
            return "it uses the host's network (spec.hostNetwork)"
        return "nothing to inject"


def _without_object(warning: str) -> str:
    """The injector's warnings start with the object (``Pod -: ...``); the API server's pod has
    no name yet, and kubectl shows which request a warning belongs to."""
    head, sep, rest = warning.partition(": ")
    return rest if sep and head.startswith("Pod ") else warning


__all__ = ["Injector", "Review", "ReviewError", "answer", "parse_review", "respond"]
