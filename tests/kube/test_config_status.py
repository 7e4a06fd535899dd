"""tulle.kube.config: the documents made of custom resources, and the status writer (what it
writes, when it writes again)."""

from __future__ import annotations

import asyncio
from typing import Any

from tulle.kube.config import StatusWriter, Verdict, document_of

KEY = ("VirtualService", "shop", "reviews")


class Recorder:
    """Stands in for KubeClient: records status patches and Events."""

    def __init__(self) -> None:
        self.statuses: list[tuple[str, str, str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, str]] = []

    async def patch_status(
        self, kind: Any, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        self.statuses.append((kind.name, namespace, name, status))

    async def create_event(
        self, obj: dict[str, Any], kind: str, reason: str, message: str, component: str
    ) -> None:
        self.events.append((kind, reason, message))


def _obj(uid: str = "u1", generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "shop", "uid": uid, "generation": generation,
                     "resourceVersion": "7", "managedFields": [{}],
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}",
                                     "team": "a"}},
        "spec": {"hosts": ["reviews"]},
        "status": {"conditions": []},
    }  # fmt: skip


def test_a_document_is_what_a_file_would_give() -> None:
    mapped = document_of(_obj())
    assert mapped is not None
    key, document = mapped
    assert key == KEY
    assert document.file == "kubernetes:VirtualService/shop/reviews"
    assert document.data == {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "shop", "annotations": {"team": "a"}},
        "spec": {"hosts": ["reviews"]},
    }


def test_status_is_written_when_the_verdict_changes_and_a_refusal_makes_an_event() -> None:
    async def main() -> None:
        recorder = Recorder()
        writer = StatusWriter(recorder)  # type: ignore[arg-type]
        await writer.report({KEY: Verdict(True, "accepted")}, {KEY: _obj()})
        await writer.report({KEY: Verdict(True, "accepted")}, {KEY: _obj()})
        assert len(recorder.statuses) == 1
        [(kind, namespace, name, status)] = recorder.statuses
        assert (kind, namespace, name) == KEY
        [condition] = status["conditions"]
        assert (condition["type"], condition["status"], condition["reason"]) == (
            "Accepted",
            "True",
            "Valid",
        )
        assert condition["observedGeneration"] == 1
        assert recorder.events == []
        await writer.report({KEY: Verdict(False, "refused: bad")}, {KEY: _obj(generation=2)})
        assert recorder.statuses[-1][3]["conditions"][0]["status"] == "False"
        assert recorder.events == [("Warning", "Rejected", "refused: bad")]
        # Deleted, then created again with the same content: a new object gets its status.
        await writer.report({}, {})
        await writer.report(
            {KEY: Verdict(False, "refused: bad")}, {KEY: _obj(uid="u2", generation=2)}
        )
        assert len(recorder.statuses) == 3
        assert len(recorder.events) == 2

    asyncio.run(main())
