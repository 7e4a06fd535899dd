"""tulle.inject, the pure function behind ``tulle inject`` and the webhook: every kind with a pod
template (and Lists) injected into manifests that Kubernetes 1.29 and 1.37 accept
(kubernetes-validate, strict), idempotent, with a JSON Patch that jsonpatch applies to the input
to give exactly the output; other documents untouched; the webhook's pod is tulle inject's
template."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from tests.inject.injected import (
    LEGACY,
    NATIVE,
    injected,
)
from tests.inject.kinds import PASSING_THROUGH, objects, validate
from tulle.inject import MeshSettings, inject, json_patch


@pytest.mark.parametrize("mesh", [NATIVE, LEGACY], ids=["native", "legacy"])
@pytest.mark.parametrize("kind", list(objects()))
def test_every_kind_is_injected_valid_idempotent_and_patchable(
    kind: str, mesh: MeshSettings
) -> None:
    original = objects()[kind]
    kept = copy.deepcopy(original)
    validate(original)
    result = inject(original, mesh)
    assert result.injected == 1
    assert result.warnings == ()
    assert original == kept  # the input is not changed
    validate(result.object)
    again = inject(result.object, mesh)
    assert (again.object, again.injected, again.warnings) == (result.object, 0, ())
    patch = json_patch(original, result.object)
    assert jsonpatch.apply_patch(original, patch) == result.object
    assert json_patch(result.object, again.object) == []


def test_other_documents_pass_through_unchanged() -> None:
    for document in PASSING_THROUGH:
        result = inject(document, NATIVE)
        assert (result.object, result.injected, result.warnings) == (document, 0, ())
        assert json_patch(document, result.object) == []


def test_a_list_injects_its_items() -> None:
    items = [objects()["Deployment"], *PASSING_THROUGH, objects()["Pod"]]
    listed = {"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}
    result = inject(listed, NATIVE)
    assert result.injected == 2
    out = result.object["items"]
    assert out[1:4] == PASSING_THROUGH
    for item in out:
        validate(item)
    assert out[0] == injected(objects()["Deployment"])
    assert jsonpatch.apply_patch(listed, json_patch(listed, result.object)) == result.object
    assert inject(result.object, NATIVE).object == result.object


def admitted_pod(deployment: dict[str, Any]) -> dict[str, Any]:
    """The Pod a Deployment's ReplicaSet creates, as the API server hands it to a mutating
    webhook: a generated name, no namespace yet on the object, an owner, defaults filled in."""
    tpl = copy.deepcopy(deployment["spec"]["template"])
    spec = tpl["spec"]
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    for c in spec["containers"]:
        c.setdefault("imagePullPolicy", "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
    metadata = {**tpl["metadata"], "generateName": "web-5d8f9c7b-",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                     "name": "web-5d8f9c7b", "uid": "1234", "controller": True}]}  # fmt: skip
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def test_the_webhook_path_gives_the_pod_tulle_inject_gives_the_template() -> None:
    deployment = objects()["Deployment"]
    by_command = injected(deployment)
    # A pod of the injected Deployment passes the webhook unchanged: an empty patch.
    pod = admitted_pod(by_command)
    assert json_patch(pod, inject(pod, NATIVE).object) == []
    # A pod of the plain Deployment gets a patch that makes it the injected template's pod.
    plain = admitted_pod(deployment)
    patch = json_patch(plain, inject(plain, NATIVE).object)
    assert jsonpatch.apply_patch(plain, patch) == admitted_pod(by_command)
    validate(jsonpatch.apply_patch(plain, patch))
