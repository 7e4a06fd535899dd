"""The ``tulle`` application: registers the commands and runs them."""

from __future__ import annotations

import typer

from tulle.cli import validate, version

app = typer.Typer(
    name="tulle",
    help="Tulle: a service mesh in Python (sidecar proxy and in-process library).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("version")(version.version)
app.command("validate")(validate.validate)


def run() -> None:
    """Console-script entry point."""
    app()
