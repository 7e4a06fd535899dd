"""tulle install's manifests: every profile passes Kubernetes' own schemas (1.29 and 1.37), the
CRDs' schemas are structural and accept every config document of examples/, and the --set keys
are checked."""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tulle.kube.install import PROFILES, SET_KEYS, InstallError, render, to_yaml, values_for
from tulle.kube.install.rbac import cluster_rules, namespace_rules

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ("1.29", "1.37")


def by_kind(manifests: list[dict], kind: str) -> list[dict]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[dict], kind: str) -> dict:
    [found] = by_kind(manifests, kind)
    return found


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_passes_kubernetes_validate_strict(profile, version):
    manifests = render(values_for(profile))
    assert len(manifests) > 20
    for manifest in manifests:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_kubernetes_validate_is_strict_here():
    """The check above can fail: a misspelt field of a Deployment is refused."""
    deployment = copy.deepcopy(one(render(values_for("minimal")), "Deployment"))
    deployment["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.37", strict=True)


def test_profiles_differ_as_documented():
    minimal, default, demo = (render(values_for(p)) for p in ("minimal", "default", "demo"))
    assert one(minimal, "Deployment")["spec"]["replicas"] == 1
    assert by_kind(minimal, "PodDisruptionBudget") == []
    for manifests in (default, demo):
        assert one(manifests, "Deployment")["spec"]["replicas"] == 2
        assert one(manifests, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    args = one(demo, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--log-level") + 1] == "debug"
    mesh = yaml.safe_load(one(demo, "ConfigMap")["data"]["mesh.yaml"])
    assert mesh["spec"]["tracing"] == {"sampling": 100.0}


def test_control_plane_pod_runs_as_non_root_with_probes_and_flags():
    deployment = one(render(values_for("default")), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http-api"}
    args = container["args"]
    assert args[:3] == ["controlplane", "--registry", "kubernetes"]
    assert args[args.index("--webhook-port") + 1] == "15017"
    assert container["image"] == "tulle:0.1.0"


def test_webhooks_select_labelled_namespaces_and_fail_closed():
    manifests = render(values_for("default", namespace="mesh"))
    [hook] = one(manifests, "MutatingWebhookConfiguration")["webhooks"]
    expressions = hook["namespaceSelector"]["matchExpressions"]
    assert {"key": "tulle-injection", "operator": "In", "values": ["enabled"]} in expressions
    assert {
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": ["kube-system", "mesh"],
    } in expressions
    assert hook["failurePolicy"] == "Fail"
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["clientConfig"]["service"] == {
        "name": "tulle-controlplane",
        "namespace": "mesh",
        "path": "/inject",
        "port": 443,
    }
    [check] = one(manifests, "ValidatingWebhookConfiguration")["webhooks"]
    covered = {
        (g, r) for rule in check["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    for crd in by_kind(manifests, "CustomResourceDefinition"):
        assert (crd["spec"]["group"], crd["spec"]["names"]["plural"]) in covered
    service = one(manifests, "Service")
    assert {
        "name": "https-webhook",
        "port": 443,
        "targetPort": "https-webhook",
        "protocol": "TCP",
    } in service["spec"]["ports"]


def test_every_object_carries_the_managed_by_label():
    for manifest in render(values_for("demo")):
        assert manifest["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tulle"


def test_rbac_reads_what_the_registry_needs_and_writes_little():
    rules = [rule.to_dict() for rule in cluster_rules("tulle-system")]
    writes = [r for r in rules if set(r["verbs"]) - {"get", "list", "watch"}]
    written = {(g, res) for r in writes for g in r["apiGroups"] for res in r["resources"]}
    assert ("authentication.k8s.io", "tokenreviews") in written
    assert ("", "pods") not in written
    assert ("", "secrets") not in {
        (g, res) for r in rules for g in r["apiGroups"] for res in r["resources"]
    }
    for rule in writes:
        if rule["resources"] in (["configmaps"], ["mutatingwebhookconfigurations"]) and set(
            rule["verbs"]
        ) & {"update", "patch"}:
            assert rule["resourceNames"]
    secrets = [r.to_dict() for r in namespace_rules() if r.resources == ("secrets",)]
    # Beyond create (which cannot be limited by name): the CA's Secret, and only get of the
    # admin token's (the control plane never changes it).
    assert {
        (tuple(r.get("resourceNames", ())), tuple(r["verbs"]))
        for r in secrets
        if r["verbs"] != ["create"]
    } == {
        (("tulle-ca-secret",), ("get", "watch", "update", "patch")),
        (("tulle-admin-token",), ("get",)),
    }
    assert all("delete" not in r["verbs"] for r in rules)


def test_skip_flags_leave_out_third_party_crds():
    groups = {
        crd["spec"]["group"]
        for crd in by_kind(
            render(values_for("minimal", skip_istio_crds=True, skip_gateway_api_crds=True)),
            "CustomResourceDefinition",
        )
    }
    assert groups == {"tulle.dev"}


def test_set_keys_apply_and_bad_ones_are_named():
    values = values_for(
        "minimal",
        settings=[
            "image=registry.example:5000/mesh/tulle",
            "tag=dev",
            "replicas=3",
            "logLevel=warning",
            "resources.limits.memory=",
            "meshConfig.mtlsMode=STRICT",
        ],
    )
    manifests = render(values)
    deployment = one(manifests, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example:5000/mesh/tulle:dev"
    assert deployment["spec"]["replicas"] == 3
    assert "limits" not in container["resources"]
    assert yaml.safe_load(one(manifests, "ConfigMap")["data"]["mesh.yaml"])["spec"]["mtls"] == {
        "mode": "STRICT"
    }
    with pytest.raises(InstallError, match="'replica': unknown key; the keys are image, tag"):
        values_for("default", settings=["replica=2"])
    with pytest.raises(InstallError, match="--set replicas: 'two' is not a whole number"):
        values_for("default", settings=["replicas=two"])
    with pytest.raises(
        InstallError, match=r"--set resources\.requests\.cpu: '1 core' is not a Kubernetes quantity"
    ):
        values_for("default", settings=["resources.requests.cpu=1 core"])
    with pytest.raises(InstallError, match="unknown profile 'tiny': use minimal, default, demo"):
        values_for("tiny")
    with pytest.raises(InstallError, match="--namespace 'Tulle_System' is not a namespace name"):
        values_for("default", namespace="Tulle_System")
    assert len({key.key for key in SET_KEYS}) == len(SET_KEYS)


def test_yaml_round_trips():
    manifests = render(values_for("default"))
    assert list(yaml.safe_load_all(to_yaml(manifests))) == manifests


# --- the CRDs' schemas ------------------------------------------------------------------------


def walk(node: Any, path: str = ""):
    yield path, node
    if isinstance(node, dict):
        for key in ("properties",):
            for name, child in node.get(key, {}).items():
                yield from walk(child, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from walk(node["additionalProperties"], f"{path}{{}}")


def crd_schemas() -> dict[tuple[str, str, str], dict]:
    schemas = {}
    for crd in by_kind(render(values_for("default")), "CustomResourceDefinition"):
        for version in crd["spec"]["versions"]:
            key = (crd["spec"]["group"], version["name"], crd["spec"]["names"]["kind"])
            schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def test_crd_schemas_are_structural():
    schemas = crd_schemas()
    assert len({kind for _, _, kind in schemas}) == 11
    for key, schema in schemas.items():
        for path, node in walk(schema):
            where = f"{key} {path}"
            assert not {"$ref", "anyOf", "oneOf"} & set(node), where
            assert "default" not in node, where
            assert (
                node.get("type")
                or node.get("x-kubernetes-preserve-unknown-fields")
                or node.get("x-kubernetes-int-or-string")
            ), where
            assert not ("properties" in node and "additionalProperties" in node), where


def as_json_schema(node: Any) -> Any:
    """An OpenAPI v3 (Kubernetes) schema as JSON Schema: ``nullable`` admits null,
    ``x-kubernetes-int-or-string`` an integer or a string."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: as_json_schema(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = as_json_schema(value)
        elif not key.startswith("x-kubernetes-") and key != "nullable":
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def example_documents() -> list[tuple[str, dict]]:
    """Every config document of examples/ (not examples/broken/, whose mistakes Tulle's own
    validation reports), the YAML in examples/grpc/demo.py, and tests/api/corpus/valid/."""
    documents = []
    files = [p for p in sorted((ROOT / "examples").rglob("*.yaml")) if "broken" not in p.parts]
    files += sorted((ROOT / "tests" / "api" / "corpus" / "valid").glob("*.yaml"))
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and "apiVersion" in doc:
                documents.append((str(path.relative_to(ROOT)), doc))
    demo = ast.parse((ROOT / "examples" / "grpc" / "demo.py").read_text())
    for node in ast.walk(demo):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith("apiVersion:")
        ):
            documents.append(
                ("examples/grpc/demo.py", yaml.safe_load(node.value.replace("%d", "50")))
            )
    return documents


def test_crd_schemas_accept_every_example():
    schemas = crd_schemas()
    documents = example_documents()
    kinds = set()
    for where, doc in documents:
        group, _, version = doc["apiVersion"].rpartition("/")
        if group not in {g for g, _, _ in schemas}:
            continue  # a Kubernetes kind (examples/shop/kubernetes/), not config
        schema = as_json_schema(schemas[(group, version, doc["kind"])])
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=str)
        assert not errors, (
            f"{where}: {doc['kind']} {doc['metadata'].get('name')}: {errors[0].message} at {list(errors[0].absolute_path)}"
        )
        kinds.add(doc["kind"])
    assert kinds >= {
        "VirtualService",
        "DestinationRule",
        "ServiceEntry",
        "AuthorizationPolicy",
        "PeerAuthentication",
        "HTTPRoute",
        "Workload",
        "RateLimit",
        "Fallback",
        "Mesh",
    }


def test_crd_schemas_refuse_a_wrong_type():
    """The acceptance above can fail: a route list written as a string is refused."""
    schema = as_json_schema(crd_schemas()[("networking.istio.io", "v1", "VirtualService")])
    document = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "x"},
        "spec": {"hosts": ["a"], "http": "route to a"},
    }
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'array'"):
        jsonschema.validate(document, schema, cls=jsonschema.Draft202012Validator)


def test_the_deployments_arguments_are_tulle_controlplanes_own():
    """Every flag the Deployment passes exists in `tulle controlplane` (its real parser), with
    the webhooks listening beyond loopback and injecting this image."""
    import typer.main

    from tulle.cli.main import app

    deployment = one(render(values_for("default", settings=["tag=9.9"])), "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["tulle"]
    command = typer.main.get_command(app)
    context = command.make_context("tulle", list(container["args"]), resilient_parsing=True)
    controlplane = command.get_command(context, "controlplane")  # type: ignore[attr-defined]
    params = controlplane.make_context("controlplane", container["args"][1:]).params
    assert params["registry"] == "kubernetes"
    assert params["webhook_port"] == 15017
    assert params["webhook_address"] == "0.0.0.0"
    assert "image=tulle:9.9" in params["inject_set"]
    assert "xds_address=tulle-controlplane.tulle-system.svc:15012" in params["inject_set"]


def test_an_install_into_a_builtin_namespace_leaves_that_namespace_alone():
    manifests = render(values_for("minimal", namespace="default"))
    assert by_kind(manifests, "Namespace") == []
    assert one(manifests, "Deployment")["metadata"]["namespace"] == "default"


def test_the_docs_list_every_set_key():
    docs = (ROOT / "docs" / "kubernetes.md").read_text()
    section = docs[docs.index("## Installing") : docs.index("## Injecting the sidecar")]
    for key in SET_KEYS:
        assert f"`{key.key}`" in section, key.key


def test_the_dashboard_reads_the_prometheus_install_is_given():
    """``--set dashboard.prometheus=URL`` becomes ``tulle controlplane --prometheus URL`` (its
    real parser takes it); a value that is not an http(s) URL is named; none by default."""
    import typer.main

    from tulle.cli.main import app

    url = "http://prometheus.monitoring:9090"
    values = values_for("default", settings=[f"dashboard.prometheus={url}"])
    [container] = one(render(values), "Deployment")["spec"]["template"]["spec"]["containers"]
    command = typer.main.get_command(app)
    context = command.make_context("tulle", list(container["args"]), resilient_parsing=True)
    controlplane = command.get_command(context, "controlplane")  # type: ignore[attr-defined]
    assert (
        controlplane.make_context("controlplane", container["args"][1:]).params["prometheus"] == url
    )
    [plain] = one(render(values_for("default")), "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    assert "--prometheus" not in plain["args"]
    with pytest.raises(
        InstallError, match=r"--set dashboard\.prometheus: 'prometheus:9090' is not"
    ):
        values_for("default", settings=["dashboard.prometheus=prometheus:9090"])
