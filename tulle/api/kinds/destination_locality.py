"""A DestinationRule's ``loadBalancer.localityLbSetting`` (Istio's LocalityLoadBalancerSetting):
which localities a caller prefers (``failover``, ``failoverPriority``) or how it spreads its
calls over them (``distribute``).

Validation follows Istio's (``pkg/config/validation``): ``distribute`` and ``failover`` exclude
each other; a ``distribute`` rule's weights are 1-100 and add up to 100; a locality is
``region[/zone[/subzone]]`` where ``*`` may stand for the last part written; ``failover``
names regions, two different ones, no wildcard; ``failover`` with a topology label in
``failoverPriority`` is refused. That failover needs outlier detection beside it is a WARNING of
the cross checks (:mod:`tulle.api.checks_locality`), as in Istio.

``zoneAwareLbSetting`` (Istio's ZoneAwareLoadBalancerSetting, Envoy's zone aware routing) has the
same ``failover`` and ``failoverPriority``, where no topology label may be named (regions and
zones are its own business), and ``minClusterSize``."""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field, field_validator, model_validator

from tulle.api.kinds.base import UINT32_MAX, FieldError, Strict
from tulle.api.names import check_label_value, check_locality

REGION_LABEL: Final = "topology.kubernetes.io/region"
ZONE_LABEL: Final = "topology.kubernetes.io/zone"
SUBZONE_LABEL: Final = "topology.istio.io/subzone"
TOPOLOGY_LABELS: Final = (REGION_LABEL, ZONE_LABEL, SUBZONE_LABEL)


def check_locality_pattern(value: str) -> str:
    """A locality a rule matches: ``region[/zone[/subzone]]``, or ``*`` as its last part."""
    parts = value.split("/")
    head, last = parts[:-1], parts[-1]
    if "*" in "".join(head) or ("*" in last and last != "*"):
        raise ValueError(
            f"{value!r}: '*' may only be the whole last part of a locality (region1/*, *)"
        )
    if last == "*":
        if len(parts) > 3:
            raise ValueError(f"{value!r} is not a locality: at most region/zone/subzone")
        if head:
            check_locality("/".join(head))
        return value
    return check_locality(value)


def _check_region(value: str) -> str:
    if "/" in value:
        raise ValueError(f"{value!r}: failover names regions only (no zone: no '/')")
    if "*" in value:
        raise ValueError(f"{value!r}: a failover region has no '*' wildcard")
    check_label_value(value)
    return value


Region = Annotated[str, Field(min_length=1)]


class LocalityDistribute(Strict):
    """Calls from ``from`` (a locality, ``*`` for any) go to the localities of ``to`` in the
    given shares (percent, adding up to 100); other localities get none."""

    from_: str = Field(alias="from", min_length=1)
    to: dict[str, Annotated[int, Field(ge=1, le=100)]] = Field(min_length=1)

    @field_validator("from_")
    @classmethod
    def _from_locality(cls, value: str) -> str:
        return check_locality_pattern(value)

    @model_validator(mode="after")
    def _shares(self) -> LocalityDistribute:
        for locality in self.to:
            try:
                check_locality_pattern(locality)
            except ValueError as error:
                raise FieldError(("to", locality), str(error)) from None
        total = sum(self.to.values())
        if total != 100:
            raise FieldError(("to",), f"the weights add up to {total}, not 100")
        return self


class LocalityFailover(Strict):
    """When the endpoints of the caller's region ``from`` are unhealthy, region ``to`` comes
    next (before the other regions)."""

    from_: Region = Field(alias="from")
    to: Region

    @field_validator("from_", "to")
    @classmethod
    def _region(cls, value: str) -> str:
        return _check_region(value)

    @model_validator(mode="after")
    def _different(self) -> LocalityFailover:
        if self.from_ == self.to:
            raise FieldError(("to",), f"failover from {self.from_} to itself: name another region")
        return self


def _check_priority_labels(value: list[str]) -> list[str]:
    for index, entry in enumerate(value):
        name, equals, forced = entry.partition("=")
        if not name or (equals and not forced) or "=" in forced:
            raise FieldError(
                (index,), f"{entry!r}: write a label name, or name=value to fix the value"
            )
    return value


class LocalityLoadBalancerSetting(Strict):
    """Istio's LocalityLoadBalancerSetting (``enabled`` unset: on, as Istio's mesh default)."""

    distribute: list[LocalityDistribute] = Field(default_factory=list)
    failover: list[LocalityFailover] = Field(default_factory=list)
    failover_priority: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    enabled: bool | None = None

    @field_validator("failover_priority")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        return _check_priority_labels(value)

    @model_validator(mode="after")
    def _consistent(self) -> LocalityLoadBalancerSetting:
        if self.distribute and self.failover:
            raise FieldError(("failover",), "set distribute or failover, not both")
        if self.failover:
            for index, entry in enumerate(self.failover_priority):
                if entry.partition("=")[0] in TOPOLOGY_LABELS:
                    raise FieldError(
                        ("failoverPriority", index),
                        f"{entry!r}: a topology label cannot be used with failover "
                        "(failover already orders the regions)",
                    )
        froms = [rule.from_ for rule in self.distribute]
        for index, origin in enumerate(froms):
            if origin in froms[:index]:
                raise FieldError(
                    ("distribute", index, "from"), f"{origin!r} is used by an earlier rule"
                )
        return self


class ZoneAwareLoadBalancerSetting(Strict):
    """Istio's ZoneAwareLoadBalancerSetting: Envoy's zone aware routing within the caller's
    region (``enabled: true`` turns it on), the other regions after it (``failover`` orders
    them), label tiers first (``failoverPriority``, no topology label); ``minClusterSize``:
    the fewest endpoints of the caller's region for zone routing (Envoy's default 6)."""

    enabled: bool | None = None
    failover: list[LocalityFailover] = Field(default_factory=list)
    failover_priority: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    min_cluster_size: Annotated[int, Field(ge=0, le=UINT32_MAX)] | None = None

    @field_validator("failover_priority")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        _check_priority_labels(value)
        for index, entry in enumerate(value):
            if entry.partition("=")[0] in TOPOLOGY_LABELS:
                raise FieldError(
                    (index,),
                    f"{entry!r}: zone aware load balancing orders regions and zones itself; "
                    "name no topology label (region, zone, subzone)",
                )
        return value
