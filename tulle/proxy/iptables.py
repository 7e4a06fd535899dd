"""The traffic-redirect rules a pod's init step installs (as Istio's istio-iptables): the app's
outbound TCP goes to the proxy's outbound port, inbound TCP to its inbound port; the proxy's own
traffic (by packet mark or by uid), loopback, and chosen ports and addresses pass untouched."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

OUTPUT_CHAIN = "TULLE_OUTPUT"
INBOUND_CHAIN = "TULLE_INBOUND"


@dataclass(frozen=True)
class RedirectPlan:
    """What to redirect where, and what to leave alone."""

    outbound_port: int = 15001
    inbound_port: int = 15006
    mark: int | None = 0x539
    proxy_uid: int | None = None
    exclude_outbound_ports: tuple[int, ...] = ()
    exclude_outbound_cidrs: tuple[str, ...] = ()
    exclude_inbound_ports: tuple[int, ...] = (15000, 15020, 15021)
    inbound: bool = True
    extra: tuple[str, ...] = field(default=())

    def rules(self) -> list[list[str]]:
        """``iptables`` argument lists, in order."""
        nat = ["-t", "nat"]
        rules = [
            [*nat, "-N", OUTPUT_CHAIN],
            [*nat, "-A", "OUTPUT", "-p", "tcp", "-j", OUTPUT_CHAIN],
        ]
        proxy_matches: list[list[str]] = []  # how a packet of the proxy's own is told apart
        if self.mark is not None:
            proxy_matches.append(["-m", "mark", "--mark", hex(self.mark)])
        if self.proxy_uid is not None:
            proxy_matches.append(["-m", "owner", "--uid-owner", str(self.proxy_uid)])
        if self.inbound:
            # The proxy calling its own pod's address (a pod calling its own Service) leaves
            # over loopback: that is inbound traffic, to be served by the inbound side (mTLS,
            # policy), not the app's port straight (Istio's ISTIO_IN_REDIRECT rule).
            rules.extend(
                [*nat, "-A", OUTPUT_CHAIN, "-p", "tcp", "-o", "lo", "!", "-d", "127.0.0.1/32",
                 *match, "-j", "REDIRECT", "--to-ports", str(self.inbound_port)]
                for match in proxy_matches
            )  # fmt: skip
        if self.mark is not None:
            rules.append(
                [*nat, "-A", OUTPUT_CHAIN, "-m", "mark", "--mark", hex(self.mark), "-j", "RETURN"]
            )
        if self.proxy_uid is not None:
            rules.append(
                [
                    *nat,
                    "-A",
                    OUTPUT_CHAIN,
                    "-m",
                    "owner",
                    "--uid-owner",
                    str(self.proxy_uid),
                    "-j",
                    "RETURN",
                ]
            )
        rules.append([*nat, "-A", OUTPUT_CHAIN, "-d", "127.0.0.1/32", "-j", "RETURN"])
        rules.extend(
            [*nat, "-A", OUTPUT_CHAIN, "-p", "tcp", "--dport", str(port), "-j", "RETURN"]
            for port in self.exclude_outbound_ports
        )
        rules.extend(
            [*nat, "-A", OUTPUT_CHAIN, "-d", cidr, "-j", "RETURN"]
            for cidr in self.exclude_outbound_cidrs
        )
        rules.append(
            [
                *nat,
                "-A",
                OUTPUT_CHAIN,
                "-p",
                "tcp",
                "-j",
                "REDIRECT",
                "--to-ports",
                str(self.outbound_port),
            ]
        )
        if self.inbound:
            rules += [
                [*nat, "-N", INBOUND_CHAIN],
                [*nat, "-A", "PREROUTING", "-p", "tcp", "-j", INBOUND_CHAIN],
            ]
            rules.extend(
                [*nat, "-A", INBOUND_CHAIN, "-p", "tcp", "--dport", str(port), "-j", "RETURN"]
                for port in self.exclude_inbound_ports
            )
            rules.append(
                [
                    *nat,
                    "-A",
                    INBOUND_CHAIN,
                    "-p",
                    "tcp",
                    "-j",
                    "REDIRECT",
                    "--to-ports",
                    str(self.inbound_port),
                ]
            )
        return rules


def apply(plan: RedirectPlan, prefix: Sequence[str] = ()) -> None:
    """Install the rules (``prefix``: e.g. ``ip netns exec NAME``); raises with iptables' own
    message on failure."""
    for rule in plan.rules():
        result = subprocess.run(
            [*prefix, "iptables", *rule], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"iptables {' '.join(rule)}: {result.stderr.strip()}")
