"""The injection webhook's decision, pure: a Pod the API server is about to create (and the
request's operation, kind and namespace) in, what to answer out: allowed or not, the JSON Patch
from the pod as the API server has it to what ``tulle inject`` makes of it (:func:`inject` and
:func:`json_patch`, the command's own functions, so the two cannot differ), a message and
warnings. The AdmissionReview envelope around it is the control plane's
(:mod:`tulle.control.admission`); this package knows pods, not HTTP.

Never injected, whatever the webhook configuration sends: kube-system and the control plane's
own namespace (answered allowed, without a patch, saying why). A pod already injected or opted
out gets no patch, and the answer says why. A pod that cannot be injected is refused (the
webhook fails closed) with the field and what to do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tulle.inject.annotations import read_options
from tulle.inject.errors import InjectError
from tulle.inject.objects import inject
from tulle.inject.patch import Operation, json_patch
from tulle.inject.pod import is_injected
from tulle.inject.settings import MeshSettings

NEVER_INJECTED = "kube-system"
"""Besides the control plane's own namespace."""
OPT_OUT = 'sidecar.tulle.dev/inject: "false"'


@dataclass(frozen=True)
class PodAdmission:
    """The answer to one pod's admission: ``patch`` is empty when nothing changes; ``code``
    is the HTTP-like status of a refusal."""

    allowed: bool
    message: str
    patch: tuple[Operation, ...] = ()
    warnings: tuple[str, ...] = ()
    code: int | None = None


def admit_pod(
    operation: str,
    group: str,
    kind: str,
    namespace: str,
    pod: Any,
    settings: MeshSettings,
    own_namespace: str,
) -> PodAdmission:
    """What the injection webhook answers for ``operation`` of ``group``/``kind`` in
    ``namespace`` (the request's; the pod's own when the request has none)."""
    if group or kind != "Pod" or operation != "CREATE":
        message = (
            f"not injected: the injector only handles Pod creation, not a {operation} of "
            f"{group or 'core'}/{kind}"
        )
        return PodAdmission(True, message, warnings=(message,))
    if not isinstance(pod, dict):
        return PodAdmission(False, "request.object: the Pod is missing or not an object", code=400)
    found = pod.get("metadata")
    metadata: dict[str, Any] = found if isinstance(found, dict) else {}
    namespace = namespace or str(metadata.get("namespace") or "")
    excluded = {NEVER_INJECTED: "kube-system", own_namespace: "the control plane's own"}
    if namespace in excluded:
        message = (
            f"not injected: namespace {namespace} is {excluded[namespace]} namespace, which "
            "Tulle never injects (even when labelled tulle-injection=enabled)"
        )
        return PodAdmission(True, message, warnings=(message,))
    name = f"Pod {namespace}/{metadata.get('name') or metadata.get('generateName') or '-'}"
    try:
        injection = inject(pod, settings)
    except InjectError as error:
        return PodAdmission(
            False,
            f"{name}: cannot inject the Tulle sidecar: {error}. Fix the pod (its template), or "
            f"opt it out with the label or annotation {OPT_OUT}",
            code=400,
        )
    warnings = tuple(_without_object(warning) for warning in injection.warnings)
    if not injection.injected:
        message = f"{name}: not injected: {_why_not(pod, settings)}"
        return PodAdmission(True, message, warnings=(*warnings, message))
    patch = tuple(json_patch(pod, injection.object))
    return PodAdmission(True, f"{name}: injected", patch, warnings)


def _why_not(pod: dict[str, Any], settings: MeshSettings) -> str:
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    if is_injected(metadata, spec):
        return "it already carries the sidecar"
    options = read_options(metadata, ("metadata",), settings)
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
