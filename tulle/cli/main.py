"""The ``tulle`` application: registers the commands and runs them.

Every command module imports typer and the standard library at its top, and what its command
needs (the control plane, the config API, the local runner, httpx, rich) inside the command:
registering the commands then costs nothing, and ``tulle proxy``, the sidecar beside every
workload, does not carry the other commands' code (about 8 MB of RSS)."""

from __future__ import annotations

import typer

from tulle.cli import (
    agent,
    ca_commands,
    check,
    config_commands,
    controlplane,
    dashboard,
    inject,
    install,
    iptables,
    local_commands,
    proxy,
    proxy_commands,
    proxy_lifecycle,
    tap,
    traces,
    validate,
    version,
)

app = typer.Typer(
    name="tulle",
    help="Tulle: a service mesh in Python (sidecar proxy and in-process library).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("version")(version.version)
app.command("validate")(validate.validate)
app.command("controlplane")(controlplane.controlplane)
app.command("install")(install.install)
app.command("uninstall")(install.uninstall)
app.command("proxy")(proxy.proxy)
app.command("iptables")(iptables.iptables)
app.command("proxy-wait")(proxy_lifecycle.proxy_wait)
app.command("proxy-drain")(proxy_lifecycle.proxy_drain)
app.command("inject")(inject.inject)
app.command("apply")(config_commands.apply)
app.command("get")(config_commands.get)
app.command("delete")(config_commands.delete)
app.command("proxy-status")(proxy_commands.proxy_status)
app.command("proxy-config")(proxy_commands.proxy_config)
app.command("check")(check.check)
app.command("up")(local_commands.up)
app.command("status")(local_commands.status)
app.command("logs")(local_commands.logs)
app.command("down")(local_commands.down)
app.command("top")(local_commands.top)
app.command("tap")(tap.tap)
app.command("dashboard")(dashboard.dashboard)
app.command("traces")(traces.traces)
app.add_typer(proxy_commands.bootstrap_app, name="bootstrap")
app.add_typer(ca_commands.ca_app, name="ca")
app.command("agent")(agent.agent)


def run() -> None:
    """Console-script entry point."""
    app()
