"""The error of an object that cannot be injected: the field, as a path, and why."""

from __future__ import annotations

FieldPath = tuple[str | int, ...]


def format_path(path: FieldPath) -> str:
    """``("spec", "containers", 0, "name")`` → ``spec.containers[0].name``."""
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text or "-"


class InjectError(ValueError):
    """An object the injector refuses: ``path`` is the field (from the object's top), the
    message says what is wrong with it."""

    def __init__(self, path: FieldPath, message: str) -> None:
        super().__init__(f"{format_path(path)}: {message}")
        self.path = path
        self.message = message
