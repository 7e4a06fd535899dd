"""The API server of tests/kube: one KMock for the session (see kmock_server.py for what it
adds to KMock and why), and a kubeconfig pointing at it.

The state is shared by every test of the session: a test uses its own namespace (and its own
names for cluster-scoped objects) and removes what it created when another test could trip on it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.kube.kmock_server import KMockThread, KubeApi
from tests.kube.tokenreviews import TokenReviews


@pytest.fixture(scope="session")
def kube_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApi]:
    """KMock serving HTTP on 127.0.0.1; ``.kubeconfig`` is a kubeconfig file for it."""
    server = KMockThread(tmp_path_factory.mktemp("kube") / "kubeconfig")
    api = server.start()
    try:
        yield api
    finally:
        server.stop()


@pytest.fixture(scope="session")
def token_reviews(kube_api: KubeApi) -> TokenReviews:
    """The session's TokenReview answers (one handler on the one KMock: every test module that
    issues service-account tokens issues them here)."""
    answers = TokenReviews()
    answers.install(kube_api)
    return answers


@pytest.fixture
def kube_env(kube_api: KubeApi) -> dict[str, str]:
    """The environment for a subprocess (kubectl, tulle) that talks to KMock: KUBECONFIG set."""
    env = dict(os.environ)
    env["KUBECONFIG"] = str(kube_api.kubeconfig)
    return env


def kubectl(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    """The real ``kubectl ARGS`` with ``env`` (a kubeconfig for KMock); its output (it must
    succeed)."""
    result = subprocess.run(
        ["kubectl", *args], check=False, input=stdin, env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout
