"""Build hook. Plain builds (``pip install .``, ``pip install -e .``) are pure Python. With
``TULLE_COMPILE=1`` the data plane's per-request modules are compiled with mypyc (part of mypy)
into C extensions beside their sources in the wheel: the same code, about a quarter less CPU per
proxied request (README, "Speed"). ``make compiled`` builds such a wheel; an editable install is
never compiled, so the extensions can't shadow the sources a developer edits."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup

# The request path of the sidecar and the library: front ends, codecs, engine, upstream pools,
# metrics and the access log. Not the entry points (__main__, run) or cold configuration code.
COMPILED_PACKAGES = ("tulle/codec", "tulle/engine", "tulle/transport", "tulle/obs")
COMPILED_PROXY = (
    "app.py", "detecting.py", "h2_front.py", "http_front.py", "in_flight.py", "recording.py",
    "tcp.py", "transparent.py", "admin.py",
)  # fmt: skip


def compiled_sources() -> list[str]:
    """The modules mypyc compiles, as paths relative to the project."""
    sources = [
        str(path)
        for package in COMPILED_PACKAGES
        for path in sorted(Path(package).glob("*.py"))
        if path.name != "__init__.py"
    ]
    sources += [f"tulle/proxy/{name}" for name in COMPILED_PROXY]
    return sources


def extensions() -> list[object]:
    """mypyc's extensions when TULLE_COMPILE=1 (never for an editable install), else none."""
    if os.environ.get("TULLE_COMPILE") != "1":
        return []
    if "editable_wheel" in sys.argv:
        print("TULLE_COMPILE=1 ignored: an editable install stays pure Python", file=sys.stderr)
        return []
    try:
        from mypyc.build import mypycify  # noqa: PLC0415 - needed only to compile
    except ImportError:
        sys.exit(
            "TULLE_COMPILE=1 needs mypy (which carries mypyc) where the wheel is built: "
            "pip install mypy, then pip wheel --no-build-isolation . (or run make compiled)"
        )
    # One C file per module, so the C compiler runs on every core.
    return list(mypycify(compiled_sources(), opt_level="3", multi_file=True))


setup(ext_modules=extensions(), options={"build_ext": {"parallel": os.cpu_count() or 1}})
