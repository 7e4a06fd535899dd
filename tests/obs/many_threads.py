"""Records made from several threads at once, while the owner takes batches."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence


def while_threads_run(
    targets: Sequence[Callable[[], object]], meanwhile: Callable[[], object]
) -> None:
    """Run each of ``targets`` in a thread of its own, the threads taking turns every
    microsecond (so records land amid batches), calling ``meanwhile`` until all have ended."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    workers = [threading.Thread(target=target) for target in targets]
    for worker in workers:
        worker.start()
    try:
        while any(worker.is_alive() for worker in workers):
            meanwhile()
    finally:
        sys.setswitchinterval(switch)
