"""Fuzz target: the translator (tulle/control/translate), from a valid model to the xDS
resources of a node, as the control plane serves them.

Input: drawn decisions (:mod:`fuzz.support.config_mutate`): which documents of the valid corpus
to keep and how to mutate them; inputs whose config does not validate stop there. Then the
registry's endpoints, and the node: proxyless gRPC (in a namespace of the model), or a
sidecar or the library beside one of its workloads.

Checked (:mod:`fuzz.support.xds_checks`): translation raises nothing; each resource is its
type's message, named as keyed, the same after the wire and JSON; it keeps the
protoc-gen-validate rules of Envoy's protos; it passes grpcio's own checks (router filter last,
path specifier set, domains, weights, locality weights, ring and outlier bounds); what it
names exists among the node's resources; and Tulle's own data plane compiles the resources as
it receives them (parsed from the wire).
"""

from __future__ import annotations

from fuzz.support.checks import calling, guarded
from fuzz.support.draw import Draw
from fuzz.support.runner import instrumented, main

with instrumented("tulle"):
    from fuzz.support import config_mutate, xds_checks
    from tulle.api import validate_documents
    from tulle.api.model import MeshModel
    from tulle.control.snapshot import build_snapshot
    from tulle.control.translate import translate
    from tulle.control.translate.context import NodeView
    from tulle.engine.compile import compile_resources

POOLS = config_mutate.load_pools()


def node(draw: Draw, model: MeshModel) -> NodeView:
    """The node the resources are for."""
    workloads = model.workloads
    if workloads and not draw.chance(3):
        workload = draw.pick(workloads)
        if draw.flag():
            return NodeView("sidecar", workload.namespace, workload.labels, workload.name)
        return NodeView("library", workload.namespace, workload.labels, workload.name)
    namespaces = sorted({s.namespace for s in model.services.values()} | {"default"})
    return NodeView("proxyless", draw.pick(namespaces))


def one_input(data: bytes) -> None:
    """One fuzz input (see the module's docstring)."""
    draw = Draw(data)
    documents = config_mutate.documents(draw, POOLS)
    with calling("validate_documents"):
        result = validate_documents(documents)
    if result.model is None:
        return  # not valid config: not the translator's input
    with calling("build_snapshot"):
        snapshot = build_snapshot(1, result.model, config_mutate.endpoints(draw, result.model))
    view = node(draw, result.model)
    with calling(f"translate ({view.mode})"):
        resources = translate(snapshot, view)
    parsed = xds_checks.check_node(resources, view.mode == "proxyless")
    with calling("compile_resources (the data plane's view of the resources)"):
        compile_resources("1", parsed)


if __name__ == "__main__":
    main("translator", guarded(one_input), max_len=512)
