"""Names and addresses as Kubernetes and the network define them, checked before they reach the
state store, the service registry or a file path.

Each ``check_*`` function returns the value when it is valid and raises ``ValueError`` with a
message naming the rule otherwise; the caller adds the field."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

DNS_LABEL_MAX = 63
DNS_SUBDOMAIN_MAX = 253
MAX_LABELS = 64

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_LABEL = re.compile(rf"{_LABEL}\Z")
_DNS_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*\Z")
_LABEL_PART = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?\Z")


def _short(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 70 else text[:67] + "..."


def check_dns_label(value: str) -> str:
    """An RFC 1123 label (a Kubernetes namespace): lowercase letters, digits and '-', at most
    63 characters, starting and ending with a letter or digit; no dots, no slashes."""
    if len(value) > DNS_LABEL_MAX:
        raise ValueError(f"{_short(value)} is longer than {DNS_LABEL_MAX} characters")
    if not _DNS_LABEL.match(value):
        raise ValueError(
            f"{_short(value)} is not a valid DNS label: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def check_dns_subdomain(value: str) -> str:
    """An RFC 1123 subdomain (the name of most Kubernetes objects): DNS labels joined by dots,
    at most 253 characters."""
    if len(value) > DNS_SUBDOMAIN_MAX:
        raise ValueError(f"{_short(value)} is longer than {DNS_SUBDOMAIN_MAX} characters")
    if not _DNS_SUBDOMAIN.match(value):
        raise ValueError(
            f"{_short(value)} is not a valid name: lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    return value


def check_label_key(key: str) -> str:
    """A Kubernetes label (or annotation) key: ``[prefix/]name``, the prefix a DNS subdomain,
    the name at most 63 letters, digits, '-', '_' and '.', starting and ending alphanumeric."""
    prefix, slash, name = key.partition("/")
    if not slash:
        prefix, name = "", key
    if slash:
        try:
            check_dns_subdomain(prefix)
        except ValueError:
            raise ValueError(f"label key {_short(key)}: the prefix must be a DNS name") from None
    if not name or len(name) > DNS_LABEL_MAX or not _LABEL_PART.match(name):
        raise ValueError(
            f"label key {_short(key)} is not valid: at most {DNS_LABEL_MAX} letters, digits, "
            "'-', '_' and '.', starting and ending with a letter or digit, after an optional "
            "'prefix/'"
        )
    return key


def check_label_value(value: str) -> str:
    """A Kubernetes label value: empty, or at most 63 letters, digits, '-', '_' and '.',
    starting and ending with a letter or digit."""
    if len(value) > DNS_LABEL_MAX or not _LABEL_PART.match(value):
        raise ValueError(
            f"label value {_short(value)} is not valid: at most {DNS_LABEL_MAX} letters, "
            "digits, '-', '_' and '.', starting and ending with a letter or digit"
        )
    return value


def check_labels(labels: Mapping[str, str]) -> Mapping[str, str]:
    """Every key and value of a label map, and at most 64 labels."""
    if len(labels) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels, got {len(labels)}")
    for key, value in labels.items():
        check_label_key(key)
        check_label_value(value)
    return labels


_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def endpoint_address(text: str) -> str:
    """An IP address traffic can be sent to (one host), in its usual written form
    (``0:0::1`` → ``::1``).

    Refused: the unspecified address and "this network" (``0.0.0.0/8``, ``::``), multicast,
    broadcast, the reserved IPv4 range 240.0.0.0/4, IPv6 zone ids (``fe80::1%eth0``), and
    IPv4-mapped IPv6 forms of any of these. Loopback, private and link-local addresses are
    hosts like any other."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{_short(text)} is not an IP address") from None
    if address.is_unspecified:
        raise ValueError(f"{text!r} is the unspecified address, not a host")
    if address.is_multicast:
        raise ValueError(f"{text!r} is a multicast address, not a host")
    if isinstance(address, ipaddress.IPv4Address):
        if address in _THIS_NETWORK:
            raise ValueError(f"{text!r} is in 0.0.0.0/8 ('this network'), not a host")
        if address == _BROADCAST:
            raise ValueError(f"{text!r} is the broadcast address, not a host")
        if address.is_reserved:
            raise ValueError(f"{text!r} is in the reserved range 240.0.0.0/4, not a host")
        return str(address)
    if address.scope_id is not None:
        raise ValueError(f"{text!r}: a zone id ('%...') is not allowed in an endpoint address")
    if address.ipv4_mapped is not None:
        try:
            return f"::ffff:{endpoint_address(str(address.ipv4_mapped))}"
        except ValueError as error:
            raise ValueError(f"{text!r} maps an IPv4 address: {error}") from None
    return str(address)


def check_locality(value: str) -> str:
    """``region[/zone[/subzone]]``: one to three parts, each as a label value, none empty."""
    parts = value.split("/")
    if len(parts) > 3 or not all(parts):
        raise ValueError(f"{_short(value)} is not a locality: write region, region/zone or "
                         "region/zone/subzone")  # fmt: skip
    for part in parts:
        try:
            check_label_value(part)
        except ValueError:
            raise ValueError(
                f"{_short(value)} is not a locality: each part is at most {DNS_LABEL_MAX} "
                "letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
            ) from None
    return value
