"""docs/compatibility.md is the loader's own list of kinds and fields: every field a model reads
has a row, no row names a field the loader does not read, and every "not yet" row is refused
with a finding that says it is not supported yet (so the table cannot promise what the loader
does not do, nor hide what it refuses)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import BaseModel

from tulle.api import validate_text
from tulle.api.fields import Message, messages
from tulle.api.findings import Severity
from tulle.api.kinds import KINDS, KUBERNETES_KINDS, Resource
from tulle.api.not_yet import NOT_YET_FIELDS
from tulle.api.unsupported import IGNORED_KINDS, OUT_OF_SCOPE_KINDS, kind_message

DOC = Path(__file__).resolve().parents[2] / "docs" / "compatibility.md"
READ_KINDS: tuple[type[Resource], ...] = (*KINDS, *KUBERNETES_KINDS)
STATUSES = {"supported", "partly", "not yet", "ignored"}
ROW = re.compile(r"^\| `(?P<field>[A-Za-z0-9]+)` \| (?P<status>[a-z ]+) \| (?P<notes>.*) \|$")


@dataclass
class Table:
    """What the document says: kinds, and per kind each message's rows (field -> status)."""

    kinds: dict[tuple[str, str], str] = field(default_factory=dict)
    fields: dict[str, dict[str, dict[str, tuple[str, str]]]] = field(default_factory=dict)


def _group_of(cell: str) -> str:
    first = re.findall(r"`([^`]+)`", cell)[0]
    if "/" in first:
        return first.rpartition("/")[0]
    return first if "." in first else ""  # a group alone, or the core group's version


def read_table() -> Table:
    table = Table()
    kind = message = None
    for number, line in enumerate(DOC.read_text().splitlines(), 1):
        if line.startswith("## "):
            kind, message = line[3:].strip(), None
            if kind != "Kinds":
                assert kind not in table.fields, f"compatibility.md:{number}: {kind} twice"
                table.fields[kind] = {}
        elif line.startswith("### "):
            message = line[4:].strip()
            assert kind, f"compatibility.md:{number}: message outside a kind"
            assert kind != "Kinds", f"compatibility.md:{number}: message in the kinds table"
            assert message not in table.fields[kind], f"compatibility.md:{number}: {message} twice"
            table.fields[kind][message] = {}
        elif kind == "Kinds" and line.startswith("| ") and not line.startswith("| kind"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            assert cells[2] in STATUSES, f"compatibility.md:{number}: status {cells[2]!r}"
            table.kinds[(cells[0], _group_of(cells[1]))] = cells[2]
        elif message and line.startswith("| `"):
            row = ROW.match(line)
            assert row, f"compatibility.md:{number}: not a field row: {line}"
            assert row["status"] in STATUSES, f"compatibility.md:{number}: {row['status']!r}"
            assert kind is not None
            rows = table.fields[kind][message]
            assert row["field"] not in rows, f"compatibility.md:{number}: {row['field']} twice"
            rows[row["field"]] = (row["status"], row["notes"])
    return table


TABLE = read_table()


def _spec(kind: type[Resource]) -> list[Message]:
    spec = kind.model_fields["spec"].annotation
    assert isinstance(spec, type)
    assert issubclass(spec, BaseModel)
    return messages(spec)


def test_every_kind_the_loader_knows_has_its_row() -> None:
    expected = {(model.KIND, model.GROUP): "supported" for model in READ_KINDS}
    expected |= {(kind, group): "not yet" for group, kind in OUT_OF_SCOPE_KINDS}
    expected |= {(kind, group): "ignored" for group, kind in IGNORED_KINDS}
    grpc_route = ("GRPCRoute", "gateway.networking.k8s.io")
    if grpc_route not in expected:  # refused by name until the mesh routes gRPC with it
        service_parent = {"spec": {"parentRefs": [{"kind": "Service", "group": "", "name": "a"}]}}
        said = kind_message(grpc_route[1], grpc_route[0], service_parent)
        assert said is not None
        assert said[0], said
        assert "not supported yet" in said[1]
        expected[grpc_route] = "not yet"
    assert TABLE.kinds == expected


def test_every_field_the_loader_reads_has_a_row_and_no_row_is_invented() -> None:
    assert set(TABLE.fields) == {model.KIND for model in READ_KINDS}
    for model in READ_KINDS:
        documented = TABLE.fields[model.KIND]
        walked = {message.name: message for message in _spec(model)}
        assert set(documented) == set(walked), f"{model.KIND}: messages differ"
        for name, message in walked.items():
            rows = documented[name]
            read = {f for f, (status, _) in rows.items() if status != "not yet"}
            assert read == set(message.fields), (
                f"{model.KIND} {name}: rows {sorted(read)} but the loader reads "
                f"{sorted(message.fields)} (a field in both the model and not_yet.py: drop it "
                "from tulle/api/not_yet.py and give its row a status)"
            )
            for f, (status, notes) in rows.items():
                if status == "partly":
                    assert notes, f"{model.KIND} {name}.{f}: a 'partly' row must say what differs"


def test_every_not_yet_field_of_not_yet_py_has_a_row() -> None:
    documented = {
        (message, f)
        for messages_ in TABLE.fields.values()
        for message, rows in messages_.items()
        for f, (status, _) in rows.items()
        if status == "not yet"
    }
    missing = set(NOT_YET_FIELDS) - documented
    assert not missing, (
        f"{sorted(missing)} are in tulle/api/not_yet.py but not 'not yet' rows of "
        "docs/compatibility.md (a field the loader now reads: drop it from not_yet.py)"
    )


_BASE_SPECS: dict[str, dict[str, object]] = {
    "VirtualService": {"hosts": ["a"]},
    "DestinationRule": {"host": "a"},
    "ServiceEntry": {"hosts": ["a.example.com"], "ports": [{"number": 80, "name": "http"}]},
    "HTTPRoute": {},
}


def _place(spec: dict[str, object], path: str, name: str) -> None:
    """Set ``name`` to ``{}`` in ``spec`` at a message path (``spec.http[].match[]``)."""
    here: dict[str, object] = spec
    for step in re.findall(r"\.([A-Za-z0-9]+)(\[\]|\{\})?", path[len("spec") :]):
        key, container = step
        if container == "[]":
            item: dict[str, object] = {}
            here.setdefault(key, [item])
            here = item
        elif container == "{}":
            value: dict[str, object] = {}
            here.setdefault(key, {"8080": value})
            here = value
        else:
            inner: dict[str, object] = {}
            here.setdefault(key, inner)
            here = inner
    here[name] = {}


def _not_yet_cases() -> list[tuple[type[Resource], Message, str]]:
    cases = []
    for model in READ_KINDS:
        for message in _spec(model):
            rows = TABLE.fields.get(model.KIND, {}).get(message.name, {})
            cases += [(model, message, f) for f, (s, _) in rows.items() if s == "not yet"]
    return cases


@pytest.mark.parametrize(
    ("model", "message", "name"),
    _not_yet_cases(),
    ids=lambda value: getattr(value, "KIND", getattr(value, "name", value)),
)
def test_a_not_yet_field_is_refused_saying_so(
    model: type[Resource], message: Message, name: str
) -> None:
    spec = json.loads(json.dumps(_BASE_SPECS.get(model.KIND, {})))
    _place(spec, message.paths[0], name)
    group = f"{model.GROUP}/" if model.GROUP else ""
    document = {
        "apiVersion": group + model.VERSIONS[0],
        "kind": model.KIND,
        "metadata": {"name": "r"},
        "spec": spec,
    }
    findings = validate_text(json.dumps(document), "compat.yaml").findings
    where = re.sub(r"\[\]|\{\}", "", message.paths[0])
    said = [
        f
        for f in findings
        if f.severity is Severity.ERROR
        and re.sub(r"\[\d+\]|\.8080", "", f.field) == f"{where}.{name}"
        and "not supported yet" in f.message
    ]
    assert said, [f"{f.field}: {f.message}" for f in findings]
