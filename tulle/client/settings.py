"""Library settings: from arguments, else from the environment the local runner and the
injector set (``TULLE_XDS_ADDRESS``, ``TULLE_NODE_ID``, ...)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from tulle.xds.grpc_stream import split_address
from tulle.xds.node import NodeIdError, make_node_id, parse_node_id

DEFAULT_SERVER = "http://127.0.0.1:15014"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable or argument."""


@dataclass(frozen=True)
class Settings:
    """Where the control plane is and who this process is."""

    xds_address: str
    node_id: str
    ready_timeout: float = 5.0
    metrics_port: int | None = None
    access_log: bool = True
    server: str = DEFAULT_SERVER  # the control plane's HTTP API (endpoint registration)
    xds_root_cert: str | None = None  # TULLE_XDS_ROOT_CERT: xDS over TLS, verified with it
    token_file: str | None = None  # TULLE_TOKEN_FILE: this replica's bootstrap token
    admin_port: int | None = None  # TULLE_ADMIN_PORT: GET /tap on loopback (tulle.client.admin)
    admin_token_file: str | None = None  # TULLE_ADMIN_TOKEN_FILE: where its token is written

    @classmethod
    def load(
        cls,
        xds_address: str | None = None,
        node_id: str | None = None,
        ready_timeout: float | None = None,
        metrics_port: int | None = None,
        access_log: bool | None = None,
        server: str | None = None,
        xds_root_cert: str | None = None,
        token_file: str | None = None,
        admin_port: int | None = None,
        admin_token_file: str | None = None,
    ) -> Settings:
        """Arguments first, then ``TULLE_*`` variables, then defaults."""
        env = os.environ
        address = xds_address or env.get("TULLE_XDS_ADDRESS")
        if not address:
            raise SettingsError(
                "no control plane: pass xds_address= or set TULLE_XDS_ADDRESS (host:port)"
            )
        try:
            split_address(address)
        except ValueError as error:
            raise SettingsError(f"TULLE_XDS_ADDRESS / xds_address: {error}") from None
        admin = _admin(env, admin_port, admin_token_file)
        node = node_id or env.get("TULLE_NODE_ID") or _default_node_id()
        try:
            parse_node_id(node)
        except NodeIdError as error:
            raise SettingsError(f"TULLE_NODE_ID / node_id: {error}") from None
        return cls(
            xds_address=address,
            node_id=node,
            ready_timeout=ready_timeout
            if ready_timeout is not None
            else _number("TULLE_READY_TIMEOUT", 5.0),
            metrics_port=metrics_port
            if metrics_port is not None
            else port_variable("TULLE_METRICS_PORT"),
            access_log=access_log
            if access_log is not None
            else env.get("TULLE_ACCESS_LOG", "1") not in ("0", "false", "off"),
            server=server or env.get("TULLE_SERVER") or DEFAULT_SERVER,
            admin_port=admin[0],
            admin_token_file=admin[1],
            **_secure_xds(env, xds_root_cert, token_file),
        )


def _admin(
    env: os._Environ[str], port: int | None, token_file: str | None
) -> tuple[int | None, str | None]:
    """``TULLE_ADMIN_PORT`` and ``TULLE_ADMIN_TOKEN_FILE`` (the arguments first): a port needs
    the file its token is written to."""
    if port is None:
        port = port_variable("TULLE_ADMIN_PORT")
    token_file = token_file or env.get("TULLE_ADMIN_TOKEN_FILE") or None
    if port is not None and token_file is None:
        raise SettingsError(
            "TULLE_ADMIN_PORT needs TULLE_ADMIN_TOKEN_FILE (where the admin token is written)"
        )
    return port, token_file


def _secure_xds(
    env: os._Environ[str], root: str | None, token: str | None
) -> dict[str, str | None]:
    """``TULLE_XDS_ROOT_CERT`` and ``TULLE_TOKEN_FILE`` (the arguments first): both (the secure
    xDS port) or neither."""
    root = root or env.get("TULLE_XDS_ROOT_CERT") or None
    token = token or env.get("TULLE_TOKEN_FILE") or None
    if root is not None and token is None:
        raise SettingsError("TULLE_XDS_ROOT_CERT needs TULLE_TOKEN_FILE (the secure xDS port)")
    for name, path in (("TULLE_XDS_ROOT_CERT", root), ("TULLE_TOKEN_FILE", token)):
        if path is not None and not os.path.isfile(path):
            raise SettingsError(f"{name}: {path} is not a file")
    return {"xds_root_cert": root, "token_file": token if root is not None else None}


def _default_node_id() -> str:
    return make_node_id("library", "127.0.0.1", f"{socket.gethostname()}-{os.getpid()}")


def _number(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not a number of seconds") from None


def port_variable(name: str, lowest: int = 0) -> int | None:
    """The port in variable ``name`` (None when unset; 0 may mean "any free port");
    SettingsError names the variable."""
    text = os.environ.get(name)
    if not text:
        return None
    if not text.isdigit() or not lowest <= int(text) < 65536:
        raise SettingsError(f"{name}={text!r} is not a port number")
    return int(text)
