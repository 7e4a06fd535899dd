"""Who subscribes to what: streams grouped by what they are offered (their nodes' group, the type
and the selection of names), so that a push looks at each offer once, and at a stream only when
its offer changed.

Each :class:`Bucket` remembers the version its members were last offered. A member's session
changes only through its own requests, each answered at once against the current offer, so when
a push finds a bucket's offer at the same version no member needs a look."""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tulle.xds.offers import ShareKey

Member = TypeVar("Member")
BucketKey = tuple[ShareKey, str, frozenset[str]]


@dataclass(slots=True)
class Bucket(Generic[Member]):
    """The streams offered the same thing, by stream key, and the version they were offered."""

    members: dict[Hashable, Member] = field(default_factory=dict)
    version: str | None = None


class Subscribers(Generic[Member]):
    """Every stream's subscriptions, by what they are offered."""

    def __init__(self) -> None:
        self._buckets: dict[BucketKey, Bucket[Member]] = {}

    def __iter__(self) -> Iterator[tuple[BucketKey, Bucket[Member]]]:
        return iter(list(self._buckets.items()))

    def __len__(self) -> int:
        return len(self._buckets)

    def move(
        self,
        key: Hashable,
        member: Member,
        share: ShareKey,
        type_url: str,
        old: frozenset[str] | None,
        new: frozenset[str],
        version: str,
    ) -> None:
        """Put ``member`` (stream ``key``) under ``new`` instead of ``old`` (None: nowhere yet),
        having been offered ``version``."""
        if old is not None:
            self.remove(key, share, type_url, old)
        bucket = self._buckets.get((share, type_url, new))
        if bucket is None:
            bucket = self._buckets[(share, type_url, new)] = Bucket(version=version)
        bucket.members[key] = member

    def remove(
        self, key: Hashable, share: ShareKey, type_url: str, selection: frozenset[str]
    ) -> None:
        """Take stream ``key`` out of the bucket of ``selection``."""
        bucket = self._buckets.get((share, type_url, selection))
        if bucket is not None:
            bucket.members.pop(key, None)
            if not bucket.members:
                del self._buckets[(share, type_url, selection)]
