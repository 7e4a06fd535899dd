"""The AdmissionReview envelope, pure: what every answer carries, and that a handler's own
failure is a refusal (the webhooks fail closed) that names the request, never an exception.
The webhooks end to end, over HTTPS, are tests/control/test_webhook.py."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tulle.control.admission import Review, ReviewError, answer, parse_review, respond


def body(**request: Any) -> bytes:
    base = {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE", "namespace": "shop", "object": {"kind": "Pod"}}  # fmt: skip
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": {**base, **request}}).encode()  # fmt: skip


def test_parse_reads_what_the_webhooks_use() -> None:
    review = parse_review(body(name="p"))
    assert (review.uid, review.operation, review.group, review.version, review.kind) == (
        "u-1", "CREATE", "", "v1", "Pod",
    )  # fmt: skip
    assert (review.namespace, review.name, review.object) == ("shop", "p", {"kind": "Pod"})


@pytest.mark.parametrize(
    ("request_fields", "complaint"),
    [
        ({"uid": ""}, "request.uid"),
        ({"kind": "Pod"}, "request.kind"),
        ({"operation": None}, "request.operation"),
    ],
)
def test_parse_names_the_missing_field(request_fields: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ReviewError, match=complaint):
        parse_review(body(**request_fields))


def test_respond_carries_the_patch_base64_and_only_what_is_set() -> None:
    patch = [{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}]
    response = respond("u-1", True, "done", patch=patch, warnings=["w"])["response"]
    assert response["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(response["patch"])) == patch
    assert response["status"] == {"message": "done"}
    assert response["warnings"] == ["w"]
    assert respond("u-2", True)["response"] == {"uid": "u-2", "allowed": True}


def test_a_handler_that_fails_is_a_refusal_naming_the_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(review: Review) -> dict[str, Any]:
        raise KeyError("surprise")

    response = answer(body(uid="u-9"), broken)["response"]
    assert response["uid"] == "u-9"
    assert response["allowed"] is False
    assert response["status"]["code"] == 500
    assert "u-9" in response["status"]["message"]
    assert "surprise" not in response["status"]["message"]  # the traceback stays in the log
    assert "KeyError: 'surprise'" in caplog.text
