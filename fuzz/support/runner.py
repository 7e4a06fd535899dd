"""The entry point every target shares: instrument the code under test, then hand the target's
``one_input`` to atheris with Tulle's defaults (corpus, seeds, artifact directory, dictionary,
input size), each of which a libFuzzer flag on the command line overrides.

    python -m fuzz.http1_codec                       # fuzz until stopped (Ctrl-C)
    python -m fuzz.http1_codec -max_total_time=60    # for a minute
    python -m fuzz.http1_codec fuzz/crashes/http1_codec/crash-...   # replay one input
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

FUZZ = Path(__file__).resolve().parent.parent  # the fuzz/ directory
ROOT = FUZZ.parent
TARGETS = ("http1_codec", "http1_front", "h2_front", "h2_frames", "config_loader", "translator")


def seeds(target: str) -> Path:
    """The target's seed corpus (committed; libFuzzer only reads it)."""
    return FUZZ / "seeds" / target


def crashes(target: str) -> Path:
    """Where a run of the target saves an input that fails (committed once diagnosed)."""
    return FUZZ / "crashes" / target


def work(target: str) -> Path:
    """Where runs of the target keep what they make (fuzz/work/, not committed: not under
    build/, which ``make compiled`` empties whenever a source changes)."""
    return FUZZ / "work" / target


def working_corpus(target: str) -> Path:
    """The corpus a run grows."""
    return work(target) / "corpus"


def dictionary(name: str) -> Path:
    """A libFuzzer dictionary of the tokens of a format (HTTP, YAML config)."""
    return FUZZ / "dicts" / f"{name}.dict"


def _is_fuzzing() -> bool:
    """Whether this process runs a target as ``python -m fuzz.<target>``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec is not None and spec.name.removeprefix("fuzz.") in TARGETS


@contextlib.contextmanager
def instrumented(*packages: str) -> Iterator[None]:
    """Wrap the imports of the code under test: when fuzzing, atheris adds coverage and
    comparison hooks to the modules of ``packages`` imported inside the block. Imported
    otherwise (the regression tests), nothing is instrumented and atheris is not needed."""
    if not _is_fuzzing():
        yield
        return
    import atheris  # noqa: PLC0415 (only a fuzzing process needs it)

    with atheris.instrument_imports(include=list(packages)):
        yield


def main(
    target: str,
    one_input: Callable[[bytes], None],
    *,
    max_len: int = 4096,
    dict_name: str | None = None,
) -> None:
    """Fuzz ``one_input``. Unless the command line says otherwise: the working corpus and the
    seeds as corpus directories (new inputs go to the first), crashes saved under
    fuzz/crashes/<target>/, inputs up to ``max_len`` bytes, a 10 s limit per input."""
    import atheris  # noqa: PLC0415

    args = sys.argv[1:]
    flags = {arg.split("=", 1)[0] for arg in args if arg.startswith("-")}
    if not [arg for arg in args if not arg.startswith("-")]:
        corpus = working_corpus(target)
        corpus.mkdir(parents=True, exist_ok=True)
        args += [str(corpus), str(seeds(target))]
    defaults = {
        "-artifact_prefix": f"{crashes(target)}/",
        "-max_len": str(max_len),
        "-timeout": "10",
        "-print_final_stats": "1",
    }
    if dict_name is not None:
        defaults["-dict"] = str(dictionary(dict_name))
    args += [f"{flag}={value}" for flag, value in defaults.items() if flag not in flags]
    for arg in args:
        if arg.startswith("-artifact_prefix="):
            prefix = arg.split("=", 1)[1]
            folder = Path(prefix) if prefix.endswith("/") else Path(prefix).parent
            folder.mkdir(parents=True, exist_ok=True)
    logging.disable(logging.CRITICAL)  # the front ends log each refusal: noise at this rate
    atheris.Setup([sys.argv[0], *args], one_input)
    atheris.Fuzz()
