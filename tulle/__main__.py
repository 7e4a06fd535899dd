"""``python -m tulle``: the same entry point as the ``tulle`` command."""

from tulle.cli.main import run

run()
