"""``/validate``: the validating webhook's AdmissionReview handling, pure. A config resource
(the Istio and tulle.dev kinds) being created or updated is checked by the validation ``tulle
validate`` runs (:func:`tulle.api.validate_text`: the schema, then the checks within the
resource) and refused, with the same findings text, when any finding is an error; warnings
pass and reach ``kubectl`` as admission warnings. Deletions, and kinds Tulle does not know
(with a warning), are allowed.

A finding's text is ``tulle validate``'s line without its ``FILE:LINE:`` head (the API server
has no file, and the lines of the object as received would point nowhere the user wrote):
``ERROR VirtualService shop/reviews: spec.http[0].timeout: invalid duration ...``."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import yaml

from tulle.api import validate_text
from tulle.api.findings import Finding, Severity
from tulle.api.kinds import UnknownKindError, model_for
from tulle.control.admission import Review, refused, respond

SOURCE = "<admission>"
"""The file name findings carry (dropped from the text the API server shows)."""


def finding_text(finding: Finding) -> str:
    """``tulle validate``'s line for ``finding`` without ``FILE:LINE: ``."""
    return finding.format().split(": ", 1)[1]


class Validator:
    """``/validate``: ``known_hosts`` are the hosts the control plane knows (its registries'),
    so that a route to a cluster service is not warned about as unknown."""

    def __init__(self, known_hosts: Callable[[], Iterable[str]] = tuple) -> None:
        self.known_hosts = known_hosts

    def __call__(self, review: Review) -> dict[str, Any]:
        api_version = f"{review.group}/{review.version}" if review.group else review.version
        what = f"{review.kind} {review.namespace or '-'}/{review.name or '-'}"
        if review.operation not in ("CREATE", "UPDATE"):
            return respond(review.uid, True, f"{what}: {review.operation} is not validated")
        try:
            model_for(api_version, review.kind)
        except UnknownKindError:
            message = (
                f"{what}: Tulle does not know {api_version} {review.kind}; not validated (the "
                "webhook configuration sends it kinds it does not read: reinstall to fix it)"
            )
            return respond(review.uid, True, message, warnings=[message])
        obj = review.object
        if not isinstance(obj, dict):
            return refused(review, f"{what}: request.object is missing or not an object")
        obj = copy.deepcopy(obj)
        metadata = obj.setdefault("metadata", {})
        if isinstance(metadata, dict) and review.namespace and not metadata.get("namespace"):
            metadata["namespace"] = review.namespace
        text = yaml.safe_dump(obj, sort_keys=False)
        validation = validate_text(text, SOURCE, self.known_hosts())
        errors = [f for f in validation.findings if f.severity is Severity.ERROR]
        warnings = [finding_text(f) for f in validation.findings if f not in errors]
        if errors:
            lines = "\n".join(finding_text(f) for f in errors)
            count = f"{len(errors)} error{'s' if len(errors) != 1 else ''}"
            return respond(
                review.uid,
                False,
                f"{what}: tulle validate found {count}:\n{lines}",
                warnings=warnings,
                code=422,
            )
        return respond(review.uid, True, f"{what}: valid", warnings=warnings)
