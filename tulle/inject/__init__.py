"""The sidecar injector: one pure function from a Kubernetes object (a Pod, anything with a pod
template, or a List of them) and the mesh's settings to the injected object, and the JSON Patch
between two objects. ``tulle inject`` and the control plane's admission webhook both call it, as
Istio's ``kube-inject`` and its webhook share one template renderer, so the webhook's patches
equal the command's output. No I/O here: documents in, documents out."""

from tulle.inject.errors import InjectError
from tulle.inject.objects import Injection, inject
from tulle.inject.patch import json_patch
from tulle.inject.settings import MeshSettings

__all__ = ["InjectError", "Injection", "MeshSettings", "inject", "json_patch"]
