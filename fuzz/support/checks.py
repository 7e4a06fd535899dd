"""Named checks. A harness states each property of the code under test with :func:`check`, and
wraps each call into it with :func:`calling`, so a failure has a stable name: the property, or
the method and the exception that escaped it.

A check named in :data:`PENDING` has failed before, has been reported, and waits for a fix in
code this harness does not own (each entry says where it was reported; its reproducer is in
fuzz/crashes/ and its regression test is an xfail). While pending, an input that fails it is
counted and set aside, so fuzzing goes on to find what is new; ``FUZZ_STRICT=1`` makes pending
checks fail like any other (to replay a reproducer). Remove the entry with the fix."""

from __future__ import annotations

import collections
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import NoReturn

# Check name -> where the failure is reported and who is fixing it.
PENDING: dict[str, str] = {}

_strict = os.environ.get("FUZZ_STRICT") == "1"
tally: collections.Counter[str] = collections.Counter()


class CheckError(AssertionError):
    """A named check failed on this input."""

    def __init__(self, name: str, detail: str = "") -> None:
        super().__init__(f"{name}: {detail}" if detail else name)
        self.name = name


def check(condition: object, name: str, detail: str | Callable[[], str] = "") -> None:
    """Fail the input with a :class:`CheckError` named ``name`` unless ``condition`` holds;
    ``detail`` says what was seen (a callable is called only on failure)."""
    if not condition:
        fail(name, detail() if callable(detail) else detail)


def fail(name: str, detail: str = "") -> NoReturn:
    """Fail the input with a :class:`CheckError` named ``name``."""
    raise CheckError(name, detail)


@contextlib.contextmanager
def calling(where: str) -> Iterator[None]:
    """A call into the code under test: an exception escaping it fails the input, named
    ``<where> raised <ExceptionType>`` (with the original traceback chained)."""
    try:
        yield
    except CheckError:
        raise
    except Exception as error:
        raise CheckError(f"{where} raised {type(error).__name__}", str(error)) from error


def guarded(one_input: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """``one_input``, with failures of pending checks counted and set aside."""

    def run(data: bytes) -> None:
        try:
            one_input(data)
        except CheckError as violation:
            if _strict or violation.name not in PENDING:
                raise
            tally[violation.name] += 1
            if tally[violation.name] == 1:
                print(f"pending check failed (set aside): {violation}", file=sys.stderr)

    return run
