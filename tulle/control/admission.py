"""The admission webhooks' AdmissionReview v1 handling, pure: a request document in, a response
document out (the listener is :mod:`tulle.control.webhook`).

``/inject`` (mutating) answers a Pod's creation with the JSON Patch from the pod the API server
has to what ``tulle inject`` makes of it (:func:`tulle.inject.admission.admit_pod`, which the
CLI hands the control plane: the parts of layer 4 do not import each other). ``/validate``
(:mod:`tulle.control.admission_validate`) refuses a config resource that ``tulle validate``
would refuse.

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

log = logging.getLogger(__name__)

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"


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


__all__ = ["Handler", "Review", "ReviewError", "answer", "parse_review", "refused", "respond"]
