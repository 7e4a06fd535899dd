"""``/validate``: the validating webhook's AdmissionReview handling, pure. A config resource
(the Istio and tulle.dev kinds) being created or updated is checked by the validation ``tulle
validate --strict-hosts`` runs on a file holding that resource (:func:`tulle.api.validate_text`:
the schema, then the cross-resource checks, with the hosts the control plane knows, whose
registry is the whole mesh's, so that an undefined host is an error as it is for the control
plane's config) and refused, with the same findings text, when an error is wrong in the
resource itself. Deletions, and kinds Tulle does not know (with a warning), are allowed.

An error another resource could fix (a destination host no ServiceEntry or Service defines
yet, a subset with no DestinationRule yet) does not refuse: the API server calls the webhook
once per object, so ``kubectl apply -f`` of a VirtualService listed before its DestinationRule
would otherwise fail, and failing closed there would block correct config (Istio's webhook
checks each object alone for the same reason; ``istioctl analyze`` does the rest). Such
findings pass as admission warnings, which ``kubectl`` prints. They are found by running the
checks again in a context where every host and subset is defined: what is left is wrong
whatever else exists.

A finding's text is ``tulle validate``'s line without its ``FILE:LINE:`` head (the API server
has no file, and the lines of the object as received would point nowhere the user wrote):
``ERROR VirtualService shop/reviews: spec.http[0].timeout: invalid duration ...``."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import yaml

from tulle.api import validate_documents
from tulle.api.checks import CHECKS, Context
from tulle.api.findings import Finding, Severity
from tulle.api.kinds import UnknownKindError, model_for
from tulle.api.loader import Loaded, load_documents
from tulle.api.source import parse_yaml
from tulle.control.admission import Review, refused, respond

SOURCE = "<admission>"
"""The file name findings carry (dropped from the text the API server shows)."""


def finding_text(finding: Finding) -> str:
    """``tulle validate``'s line for ``finding`` without ``FILE:LINE: ``."""
    return finding.format().split(": ", 1)[1]


class _Everything(set[str]):
    def __contains__(self, item: object) -> bool:
        return True


class _AllSubsets(dict[str, set[str]]):
    def get(self, key: str, default: Any = None) -> set[str]:
        return _Everything()


class _OpenContext(Context):
    """The checks' context with every host and every subset defined."""

    def __init__(self, loaded: list[Loaded], known_hosts: Iterable[str] = ()) -> None:
        super().__init__(loaded, known_hosts)
        self.subsets = _AllSubsets()

    def is_known(self, host: str) -> bool:
        return True


def own_errors(text: str, known_hosts: Iterable[str]) -> tuple[list[Finding], list[Finding]]:
    """``tulle validate``'s findings for ``text``, split: the errors that are wrong whatever
    other resources exist, and the rest (warnings, and errors another resource could fix)."""
    documents, parsing = parse_yaml(text, SOURCE)
    hosts = set(known_hosts)
    everything = validate_documents(documents, parsing, hosts, strict_hosts=True).findings
    loaded, schema = load_documents(documents)
    context = _OpenContext(loaded, hosts)
    own = {*parsing, *schema, *(finding for check in CHECKS for finding in check(context))}
    errors = [f for f in everything if f.severity is Severity.ERROR and f in own]
    return errors, [f for f in everything if f not in errors]


def _warning(finding: Finding) -> str:
    if finding.severity is Severity.ERROR:
        return f"{finding_text(finding)} (admitted: another resource may define it)"
    return finding_text(finding)


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
        errors, others = own_errors(text, self.known_hosts())
        warnings = [_warning(finding) for finding in others]
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
