"""Istio's security kinds (``security.istio.io/v1``): PeerAuthentication, AuthorizationPolicy."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from tulle.api.kinds.base import (
    FieldError,
    LabelSelector,
    PortNumber,
    Resource,
    Strict,
    check_cidrs,
)
from tulle.api.names import check_dns_label, check_dns_subdomain

SECURITY_GROUP = "security.istio.io"
SECURITY_VERSIONS = ("v1", "v1beta1")

MtlsMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]

# Condition keys of AuthorizationPolicy ``when`` that Tulle evaluates: those of Istio's
# conditions reference (https://istio.io/latest/docs/reference/config/security/conditions/)
# but end-user JWT's (``request.auth.*``, tulle.api.unsupported) and Envoy metadata's
# (``experimental.envoy.filters.*``), plus ``source.trustDomain``, which Istio's validation takes.
IP_KEYS = frozenset({"source.ip", "remote.ip", "destination.ip"})
CONDITION_KEYS = IP_KEYS | {
    "source.namespace",
    "source.principal",
    "source.trustDomain",
    "destination.port",
    "connection.sni",
}
_HEADER_KEY = re.compile(r"^request\.headers\[([^\]]+)\]$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
ENVOY_METADATA = "experimental.envoy.filters."


def _port_key(value: object) -> object:
    """A port number as a map key: YAML reads ``9090:`` as an integer, JSON (and the API's view
    of a resource, which is JSON) has the string ``"9090"``; Istio takes both."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 5:
        return int(value)
    return value


PortKey = Annotated[PortNumber, BeforeValidator(_port_key)]


class MutualTLS(Strict):
    """``mtls: {mode: STRICT}``."""

    mode: MtlsMode = "UNSET"


class PeerAuthenticationSpec(Strict):
    """Which traffic a workload accepts: mTLS only (STRICT), both (PERMISSIVE), or plain text."""

    selector: LabelSelector | None = None
    mtls: MutualTLS | None = None
    port_level_mtls: dict[PortKey, MutualTLS] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _port_level_needs_selector(self) -> PeerAuthenticationSpec:
        if self.port_level_mtls and self.selector is None:
            raise FieldError(
                ("portLevelMtls",), "portLevelMtls applies only with a selector (as in Istio)"
            )
        return self


class SecurityResource(Resource):
    """Base of the ``security.istio.io`` kinds."""

    GROUP: ClassVar[str] = SECURITY_GROUP
    VERSIONS: ClassVar[tuple[str, ...]] = SECURITY_VERSIONS


class PeerAuthentication(SecurityResource):
    """Istio PeerAuthentication: the mTLS mode of the workloads it selects."""

    KIND: ClassVar[str] = "PeerAuthentication"

    spec: PeerAuthenticationSpec = Field(default_factory=PeerAuthenticationSpec)


def _check_ports(value: list[str]) -> list[str]:
    for port in value:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f'{port!r} is not a port number (ports are strings: "8080")')
    return value


def _check_account(value: str) -> str:
    """``<namespace>/<service account>`` or ``<service account>``: DNS-1123 names."""
    namespace, slash, account = value.rpartition("/")
    if slash:
        check_dns_label(namespace)
    check_dns_subdomain(account)
    return value


class Source(Strict):
    """Who sends the request: SPIFFE principals, namespaces, trust domains, the peer's IP
    blocks, the original client's (``remoteIpBlocks``), and their negations."""

    principals: list[str] = Field(default_factory=list)
    not_principals: list[str] = Field(default_factory=list)
    namespaces: list[str] = Field(default_factory=list)
    not_namespaces: list[str] = Field(default_factory=list)
    ip_blocks: list[str] = Field(default_factory=list)
    not_ip_blocks: list[str] = Field(default_factory=list)
    remote_ip_blocks: list[str] = Field(default_factory=list)
    not_remote_ip_blocks: list[str] = Field(default_factory=list)
    trust_domains: list[str] = Field(default_factory=list)
    not_trust_domains: list[str] = Field(default_factory=list)
    # <namespace>/<account> or <account> (the policy's namespace); Istio's serviceAccounts.
    service_accounts: list[Annotated[str, AfterValidator(_check_account)]] = Field(
        default_factory=list
    )
    not_service_accounts: list[Annotated[str, AfterValidator(_check_account)]] = Field(
        default_factory=list
    )

    _blocks = field_validator(
        "ip_blocks", "not_ip_blocks", "remote_ip_blocks", "not_remote_ip_blocks"
    )(check_cidrs)


class Operation(Strict):
    """What the request does: methods, paths, ports, hosts (and their negations)."""

    hosts: list[str] = Field(default_factory=list)
    not_hosts: list[str] = Field(default_factory=list)
    ports: list[str] = Field(default_factory=list)
    not_ports: list[str] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=list)
    not_methods: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    not_paths: list[str] = Field(default_factory=list)

    _ports = field_validator("ports", "not_ports")(_check_ports)


class RuleFrom(Strict):
    """``from: [{source: {...}}]``."""

    source: Source


class RuleTo(Strict):
    """``to: [{operation: {...}}]``."""

    operation: Operation


class Condition(Strict):
    """``when: [{key: source.namespace, values: [...]}]``."""

    key: str
    values: list[str] = Field(default_factory=list)
    not_values: list[str] = Field(default_factory=list)

    @field_validator("key")
    @classmethod
    def _known_key(cls, value: str) -> str:
        header = _HEADER_KEY.match(value)
        if header is not None:
            if not _TOKEN.match(header.group(1)):
                raise ValueError(f"{header.group(1)!r} is not a header name (an RFC 9110 token)")
            return value
        if value in CONDITION_KEYS:
            return value
        if value.startswith(ENVOY_METADATA):
            raise ValueError(
                f"condition key {value!r} is not supported yet: it reads Envoy filters' "
                "dynamic metadata (experimental in Istio), which Tulle's proxies do not "
                "produce; an equivalent may come in a later issue"
            )
        raise ValueError(
            f"unknown condition key {value!r}; use request.headers[NAME] or "
            f"{', '.join(sorted(CONDITION_KEYS))}"
        )

    @model_validator(mode="after")
    def _has_values(self) -> Condition:
        if not self.values and not self.not_values:
            raise ValueError("set values or notValues")
        for field, values in (("values", self.values), ("notValues", self.not_values)):
            for index, value in enumerate(values):
                problem = _value_problem(self.key, value)
                if problem is not None:
                    raise FieldError((field, index), problem)
        return self


def _value_problem(key: str, value: str) -> str | None:
    """Why ``value`` cannot be a value of condition ``key`` (Istio's generators refuse it),
    or None."""
    if key in IP_KEYS:
        try:
            check_cidrs([value])
        except ValueError as error:
            return str(error)
    elif key == "destination.port" and not (
        value.isascii() and value.isdigit() and int(value) <= 65535
    ):
        return f'{value!r} is not a port number (0-65535, a string: "8080")'
    return None


class Rule(Strict):
    """A rule matches when its ``from``, ``to`` and ``when`` all match (an empty part matches)."""

    from_: list[RuleFrom] = Field(default_factory=list, alias="from")
    to: list[RuleTo] = Field(default_factory=list)
    when: list[Condition] = Field(default_factory=list)


class AuthorizationPolicySpec(Strict):
    """ALLOW, DENY or AUDIT the requests that match ``rules`` at the selected workloads."""

    selector: LabelSelector | None = None
    action: Literal["ALLOW", "DENY", "AUDIT"] = "ALLOW"
    rules: list[Rule] = Field(default_factory=list)


class AuthorizationPolicy(SecurityResource):
    """Istio AuthorizationPolicy: access control at the receiving workload."""

    KIND: ClassVar[str] = "AuthorizationPolicy"

    spec: AuthorizationPolicySpec = Field(default_factory=AuthorizationPolicySpec)
