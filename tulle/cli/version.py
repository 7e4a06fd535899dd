"""``tulle version``."""

from __future__ import annotations

import platform

import typer

from tulle import __version__


def version() -> None:
    """Print Tulle's version and the Python it runs on."""
    typer.echo(f"tulle {__version__} (Python {platform.python_version()})")
