"""tulle.inject, the pure function behind ``tulle inject`` and the webhook: annotations. Exclusions
from interception (Tulle's and Istio's spellings), Istio's applied and not applied (warnings
naming the object), and the docs list every one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.inject.injected import (
    NATIVE,
    container,
    injected,
    pod_of,
)
from tests.inject.kinds import objects
from tulle.inject import inject


def init_args(obj: dict[str, Any]) -> list[str]:
    return container(pod_of(injected(obj))["spec"], "tulle-init")["args"]


def test_exclusions_from_interception_tulle_and_istio_spellings() -> None:
    args = init_args(objects(**{
        "traffic.sidecar.tulle.dev/excludeInboundPorts": "9000, 9001",
        "traffic.sidecar.istio.io/excludeInboundPorts": "9001,9002",
        "traffic.sidecar.istio.io/excludeOutboundPorts": "5432",
        "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.0.0.0/8,169.254.169.254/32,fd00::/8",
        "traffic.sidecar.istio.io/includeInboundPorts": "*",
        "traffic.sidecar.istio.io/includeOutboundIPRanges": "*",
    })["Deployment"])  # fmt: skip
    pairs = list(zip(args[1::2], args[2::2], strict=False))
    assert [v for k, v in pairs if k == "--exclude-inbound-port"] == [
        "15000", "15020", "15021", "9000", "9001", "9002"]  # fmt: skip
    assert [v for k, v in pairs if k == "--exclude-outbound-port"] == ["5432"]
    # only IPv4 is intercepted (iptables): an IPv6 range needs no exclusion
    assert [v for k, v in pairs if k == "--exclude-outbound-cidr"] == [
        "10.0.0.0/8", "169.254.169.254/32"]  # fmt: skip
    assert pairs[:4] == [("--outbound-port", "15001"), ("--inbound-port", "15006"),
                         ("--proxy-uid", "1337"), ("--mark", "")]  # fmt: skip


def test_not_applied_annotations_are_warnings_naming_the_object() -> None:
    result = inject(objects(**{
        "sidecar.istio.io/unheardOf": "1",
        "proxy.istio.io/config": "holdApplicationUntilProxyStarts: true",
        "traffic.sidecar.istio.io/includeInboundPorts": "8080",
        "sidecar.istio.io/interceptionMode": "TPROXY",
        "sidecar.tulle.dev/typo": "x",
        "example.com/other": "not ours",
    })["Deployment"], NATIVE)  # fmt: skip
    assert result.injected == 1
    assert sorted(result.warnings) == sorted([
        "Deployment shop/web: annotation sidecar.istio.io/unheardOf ignored: Tulle does not know it",
        "Deployment shop/web: annotation proxy.istio.io/config ignored: not supported: ProxyConfig "
        "is Envoy's; the sidecar always holds the app until it is ready "
        "(holdApplicationUntilProxyStarts)",
        "Deployment shop/web: annotation traffic.sidecar.istio.io/includeInboundPorts: '8080' not "
        "applied: only '*' (every inbound port but the excluded ones is intercepted)",
        "Deployment shop/web: annotation sidecar.istio.io/interceptionMode: 'TPROXY' not applied: "
        "only REDIRECT (tulle iptables has no TPROXY mode)",
        "Deployment shop/web: annotation sidecar.tulle.dev/typo ignored: Tulle does not know it",
    ])  # fmt: skip


def test_applied_istio_annotations() -> None:
    spec = pod_of(injected(objects(**{
        "sidecar.istio.io/proxyImage": "registry.example/tulle:9",
        "sidecar.istio.io/proxyCPU": "50m", "sidecar.istio.io/proxyMemoryLimit": "300Mi",
        "sidecar.istio.io/logLevel": "trace", "sidecar.istio.io/nativeSidecar": "false",
        "sidecar.istio.io/discoveryAddress": "cp.example:15012",
    })["Deployment"]))["spec"]  # fmt: skip
    proxy = container(spec, "tulle-proxy")
    assert proxy in spec["containers"]  # nativeSidecar false
    assert proxy["image"] == container(spec, "tulle-init")["image"] == "registry.example/tulle:9"
    assert proxy["resources"] == {"requests": {"cpu": "50m", "memory": "128Mi"},
                                  "limits": {"memory": "300Mi"}}  # fmt: skip
    args = proxy["args"]
    assert args[args.index("--log-level") + 1] == "debug"
    assert args[args.index("--xds") + 1] == "cp.example:15012"


def test_the_docs_list_every_annotation() -> None:
    from tulle.inject.annotations import ISTIO_ANNOTATIONS, TULLE_ANNOTATIONS

    docs = (Path(__file__).parent.parent.parent / "docs" / "kubernetes.md").read_text()
    for name in [*ISTIO_ANNOTATIONS, *TULLE_ANNOTATIONS]:
        if name.startswith("sidecar.tulle.dev/proxy") and name != "sidecar.tulle.dev/proxyImage":
            assert name.removeprefix("sidecar.tulle.dev/") in docs, name  # one row for four
        else:
            assert f"| `{name}`" in docs, name
