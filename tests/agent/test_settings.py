"""``tulle agent``'s settings are checked before anything is written, each refusal naming the
option and the file; and the bootstrap it pairs with (``tulle bootstrap grpc``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tulle.agent import AgentError, AgentSettings
from tulle.agent.bootstrap import BootstrapError, grpc_bootstrap
from tulle.security import CertificateAuthority


def settings(tmp_path: Path, **changed: object) -> AgentSettings:
    root = tmp_path / "root-cert.pem"
    if not root.exists():
        ca = CertificateAuthority.load_or_create(tmp_path / "ca", "cluster.local")
        root.write_bytes(ca.trust_bundle_pem())
    token = tmp_path / "token"
    if not token.exists():
        token.write_text("s3cret\n")
        token.chmod(0o600)
    fields: dict[str, object] = {
        "xds": "127.0.0.1:15012",
        "root_cert": root,
        "token_file": token,
        "directory": tmp_path / "certs",
        "replica": "client-0.default",
    }
    fields.update(changed)
    return AgentSettings(**fields)  # type: ignore[arg-type]


def refusal(given: AgentSettings) -> str:
    with pytest.raises(AgentError) as refused:
        given.check()
    return str(refused.value)


def test_good_settings_pass_and_write_nothing(tmp_path: Path):
    good = settings(tmp_path)
    good.check()
    assert good.token() == "s3cret"
    assert not (tmp_path / "certs").exists()


def test_each_refusal_names_what_is_wrong(tmp_path: Path):
    assert refusal(settings(tmp_path, xds="nowhere")) == "--xds: 'nowhere' is not HOST:PORT"
    assert refusal(settings(tmp_path, replica="client-0")) == (
        "replica 'client-0' must be <pod>.<namespace>"
    )
    missing = tmp_path / "missing.pem"
    assert refusal(settings(tmp_path, root_cert=missing)) == (
        f"--xds-root-cert {missing}: No such file or directory"
    )
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    assert str(junk) in refusal(settings(tmp_path, root_cert=junk))
    assert refusal(settings(tmp_path, token_file=tmp_path / "none")) == (
        f"--token-file: token file {tmp_path / 'none'} does not exist"
    )
    open_token = tmp_path / "open-token"
    open_token.write_text("s3cret")
    os.chmod(open_token, 0o644)
    assert refusal(settings(tmp_path, token_file=open_token)) == (
        f"--token-file: token file {open_token} is readable by others (mode 0644); chmod 600 it"
    )
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert refusal(settings(tmp_path, directory=a_file)) == f"--certs {a_file} is not a directory"


def test_the_bootstrap_needs_the_agents_directory_unless_insecure(tmp_path: Path):
    with pytest.raises(BootstrapError, match="secure xDS needs --certs"):
        grpc_bootstrap(
            "127.0.0.1:15012", "proxyless~127.0.0.1~c-0.default~default.svc.cluster.local"
        )
    with pytest.raises(BootstrapError, match="must be positive"):
        grpc_bootstrap("x:1", "n", certs=tmp_path, refresh_interval=0)
    plain = grpc_bootstrap("127.0.0.1:15010", "n", insecure=True, certs=tmp_path)
    assert plain["xds_servers"][0]["channel_creds"] == [{"type": "insecure"}]
    assert "call_creds" not in plain["xds_servers"][0]
    assert plain["certificate_providers"]["default"]["plugin_name"] == "file_watcher"
    given_root = grpc_bootstrap("h:1", "n", certs=tmp_path, root_cert=tmp_path / "bundle.pem")
    assert given_root["xds_servers"][0]["channel_creds"] == [
        {"type": "tls", "config": {"ca_certificate_file": str(tmp_path / "bundle.pem")}}
    ]
