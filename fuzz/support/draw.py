"""Choices drawn from fuzz input, front to back: small integers, picks from a list, byte
strings. An exhausted input draws zeros (the first option), so every input means something
and a shorter input is a simpler one, which is what libFuzzer's reductions need."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


class Draw:
    """A cursor over fuzz input that turns its bytes into decisions."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def left(self) -> int:
        """Bytes not drawn yet."""
        return len(self.data) - self.position

    def byte(self) -> int:
        """One byte (0 once the input is exhausted)."""
        if self.position >= len(self.data):
            return 0
        self.position += 1
        return self.data[self.position - 1]

    def below(self, bound: int) -> int:
        """An integer in ``[0, bound)``, from one byte, or two when ``bound`` exceeds 256."""
        if bound <= 1:
            return 0
        value = self.byte()
        if bound > 256:
            value = value << 8 | self.byte()
        return value % bound

    def chance(self, one_in: int) -> bool:
        """True about once in ``one_in`` draws (the zero byte is True: an exhausted input
        takes the first branch)."""
        return self.below(one_in) == 0

    def flag(self) -> bool:
        """True or False, as the next byte's low bit says."""
        return bool(self.byte() & 1)

    def pick(self, options: Sequence[T]) -> T:
        """One of ``options``."""
        return options[self.below(len(options))]

    def take(self, most: int) -> bytes:
        """Up to ``most`` bytes, as many as the next byte says."""
        size = min(self.below(most + 1), self.left())
        chunk = self.data[self.position : self.position + size]
        self.position += size
        return chunk

    def rest(self) -> bytes:
        """Every byte not drawn yet."""
        chunk = self.data[self.position :]
        self.position = len(self.data)
        return chunk


def split(data: bytes, seed: int) -> list[bytes]:
    """``data`` in pieces: whole for seed 0, else cut where a generator seeded with ``seed``
    says (single bytes, a few bytes, or larger runs), so one input byte chooses among 255 ways
    to deliver the same stream."""
    if seed == 0 or len(data) < 2:
        return [data]
    pieces: list[bytes] = []
    state = seed
    position = 0
    while position < len(data):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF  # a small LCG: stable across Pythons
        size = 1 + (state >> 8) % (1, 3, 17, 200)[(state >> 4) & 3]
        pieces.append(data[position : position + size])
        position += size
    return pieces
