"""``python -m tulle.proxy SETTINGS_JSON``: the sidecar process. ``tulle proxy`` parses and checks
the options, then replaces itself with this (same PID), so the sidecar does not carry the CLI's
option parsing (typer builds its options with pydantic: about 12 MB of RSS)."""

from __future__ import annotations

import sys

from tulle.proxy.run import run_proxy
from tulle.proxy.settings import ProxySettings, SettingsError


def main(argv: list[str]) -> int:
    """Run the sidecar the settings describe; 2 when they are not settings."""
    if len(argv) != 1:
        print("usage: python -m tulle.proxy SETTINGS_JSON (`tulle proxy` runs it)", file=sys.stderr)
        return 2
    try:
        settings = ProxySettings.from_json(argv[0])
        settings.check()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return run_proxy(settings)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
