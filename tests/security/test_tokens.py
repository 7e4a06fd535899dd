"""Bootstrap tokens and the admin token: what is stored, who may read it, what proves what."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tulle.security import (
    BootstrapTokens,
    TokenFileError,
    Unauthenticated,
    WorkloadIdentity,
    admin_token,
    read_token_file,
)
from tulle.security.files import UnsafeFileError

ROOT = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def runner_side(tmp_path) -> BootstrapTokens:
    """The tokens as the local runner holds them."""
    return BootstrapTokens(tmp_path / "state")


@pytest.fixture
def control_plane_side(tmp_path) -> BootstrapTokens:
    """The same state directory as the control plane reads it (its own cache)."""
    return BootstrapTokens(tmp_path / "state")


def test_a_token_proves_its_identity_and_only_its_digest_is_stored(runner_side, control_plane_side):
    path = runner_side.issue("shop", "frontend", "frontend-0")
    token = read_token_file(path)
    assert mode(path) == 0o600
    assert mode(runner_side.records_path) == 0o600
    assert mode(path.parent) == 0o700
    assert token not in runner_side.records_path.read_text()
    assert control_plane_side.authenticate(token) == WorkloadIdentity("shop", "frontend")
    assert control_plane_side.authenticate(token + "\n") == WorkloadIdentity("shop", "frontend")
    assert control_plane_side.identities() == {"frontend-0": WorkloadIdentity("shop", "frontend")}
    saved = json.loads(runner_side.records_path.read_text())
    assert set(saved["replicas"]["frontend-0"]) == {"sha256", "namespace", "service_account"}


def test_each_replica_has_its_own_token(runner_side):
    first = read_token_file(runner_side.issue("shop", "cart", "cart-0"))
    second = read_token_file(runner_side.issue("shop", "payment", "payment-0"))
    assert first != second
    assert runner_side.authenticate(first).service_account == "cart"
    assert runner_side.authenticate(second).service_account == "payment"


def test_a_wrong_token_is_refused_without_echoing_it(runner_side):
    runner_side.issue("shop", "frontend", "frontend-0")
    guess = "x" * 43
    with pytest.raises(Unauthenticated) as refused:
        runner_side.authenticate(guess)
    assert str(refused.value) == "unknown or revoked bootstrap token"
    assert guess not in str(refused.value)
    with pytest.raises(Unauthenticated, match="no bootstrap token presented"):
        runner_side.authenticate("  ")
    with pytest.raises(Unauthenticated, match="longer than"):
        runner_side.authenticate("x" * 5000)


def test_a_revoked_token_no_longer_proves_anything(runner_side, control_plane_side):
    path = runner_side.issue("shop", "frontend", "frontend-0")
    token = read_token_file(path)
    control_plane_side.authenticate(token)
    assert runner_side.revoke("frontend-0")
    assert not path.exists()
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        control_plane_side.authenticate(token)
    assert not runner_side.revoke("frontend-0")


def test_reissuing_replaces_the_old_token(runner_side):
    old = read_token_file(runner_side.issue("shop", "frontend", "frontend-0"))
    new = read_token_file(runner_side.issue("shop", "frontend", "frontend-0"))
    assert runner_side.authenticate(new).service_account == "frontend"
    with pytest.raises(Unauthenticated):
        runner_side.authenticate(old)


def test_writers_with_stale_caches_lose_no_record(runner_side, control_plane_side):
    runner_side.issue("shop", "cart", "cart-0")
    control_plane_side.identities()  # its cache now holds cart-0 only
    control_plane_side.issue("shop", "payment", "payment-0")
    runner_side.issue("shop", "frontend", "frontend-0")
    assert set(control_plane_side.identities()) == {"cart-0", "payment-0", "frontend-0"}


def test_another_processs_edit_is_picked_up(tmp_path, control_plane_side):
    with pytest.raises(Unauthenticated):
        control_plane_side.authenticate("nothing-issued-yet")
    issue = (
        "import sys; from pathlib import Path; from tulle.security import BootstrapTokens; "
        "print(BootstrapTokens(Path(sys.argv[1])).issue('shop', 'cart', 'cart-0'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", issue, str(tmp_path / "state")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    token = read_token_file(Path(result.stdout.strip()))
    assert control_plane_side.authenticate(token) == WorkloadIdentity("shop", "cart")
    revoke = (
        "import sys; from pathlib import Path; from tulle.security import BootstrapTokens; "
        "BootstrapTokens(Path(sys.argv[1])).revoke('cart-0')"
    )
    subprocess.run(
        [sys.executable, "-c", revoke, str(tmp_path / "state")], cwd=ROOT, check=True, timeout=60
    )
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        control_plane_side.authenticate(token)


def test_records_others_can_read_fail_closed(runner_side):
    token = read_token_file(runner_side.issue("shop", "cart", "cart-0"))
    runner_side.records_path.chmod(0o644)
    with pytest.raises(Unauthenticated, match=r"cannot be checked: .*readable by others"):
        BootstrapTokens(runner_side.state_dir).authenticate(token)


@pytest.mark.parametrize("replica", ["", "../cart", "a/b", ".hidden", "x" * 254])
def test_replica_names_must_be_file_names(runner_side, replica):
    with pytest.raises(ValueError, match="replica name"):
        runner_side.issue("shop", "cart", replica)


def test_identity_names_are_checked(runner_side):
    with pytest.raises(ValueError, match="namespace"):
        runner_side.issue("a/b", "cart", "cart-0")


def test_read_token_file_errors(tmp_path):
    path = tmp_path / "token"
    with pytest.raises(TokenFileError, match=f"token file {path} does not exist"):
        read_token_file(path)
    path.write_text("secret\n")
    path.chmod(0o644)
    with pytest.raises(UnsafeFileError) as refused:
        read_token_file(path)
    assert (
        str(refused.value) == f"token file {path} is readable by others (mode 0644); chmod 600 it"
    )
    path.chmod(0o620)
    with pytest.raises(UnsafeFileError, match=r"writable by others \(mode 0620\)"):
        read_token_file(path)
    path.chmod(0o600)
    assert read_token_file(path) == "secret"
    path.write_text("\n")
    with pytest.raises(TokenFileError, match="is empty"):
        read_token_file(path)


def test_the_admin_token_is_made_once_and_read_after(tmp_path):
    state = tmp_path / "state"
    token = admin_token(state)
    assert len(token) >= 43
    assert mode(state / "admin-token") == 0o600
    assert admin_token(state) == token
    assert read_token_file(state / "admin-token") == token  # what the CLI does


def test_an_existing_state_directory_keeps_its_mode(tmp_path):
    """The state directory is shared with other parts: its own mode is theirs to choose; the
    secrets in it are 0600 each."""
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    admin_token(state)
    path = BootstrapTokens(state).issue("shop", "cart", "cart-0")
    assert mode(state) == 0o755
    assert mode(state / "admin-token") == 0o600
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert all(mode(p) == 0o600 for p in state.iterdir() if p.is_file())


def project(directory: Path, name: str, content: str, file_mode: int) -> Path:
    """``name`` in ``directory`` as the kubelet's atomic writer projects a volume's file: the
    data in a timestamped directory, ``..data`` a symlink to it, ``name`` a symlink into
    ``..data``."""
    directory.mkdir()
    data = directory / "..2026_12_06_04_45_00.123456789"
    data.mkdir()
    (data / name).write_text(content)
    (data / name).chmod(file_mode)
    (directory / "..data").symlink_to(data.name)
    (directory / name).symlink_to(f"..data/{name}")
    return directory / name


def test_the_kubelets_projected_token_may_be_readable_never_writable(tmp_path):
    token = project(tmp_path / "tokens", "tulle-token", "header.claims.signature\n", 0o644)
    assert read_token_file(token) == "header.claims.signature"
    # The same file without the kubelet's layout is an ordinary token file: refused.
    plain = tmp_path / "plain-token"
    plain.write_text("header.claims.signature\n")
    plain.chmod(0o644)
    with pytest.raises(UnsafeFileError, match="readable by others"):
        read_token_file(plain)
    # A symlink named like the kubelet's, but no ..data beside it: not the kubelet's.
    (tmp_path / "lookalike").mkdir()
    (tmp_path / "lookalike" / "t").symlink_to(plain)
    with pytest.raises(UnsafeFileError, match="readable by others"):
        read_token_file(tmp_path / "lookalike" / "t")
    writable = project(tmp_path / "writable", "tulle-token", "x.y.z\n", 0o666)
    with pytest.raises(UnsafeFileError) as refused:
        read_token_file(writable)
    assert str(refused.value) == (
        f"token file {writable} (projected by the kubelet) is writable by others (mode 0666)"
    )
