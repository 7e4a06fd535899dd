"""Fuzz target: the config loader and validation (tulle/api: source.py reads the YAML,
loader.py the schema, checks.py the cross-resource rules, normalize.py the model), through
``validate_text``: what ``tulle validate`` and the control plane's API run on text a user sends.

Input: the YAML text itself (UTF-8; undecodable bytes replaced, as the API refuses them before
parsing anyway). Seeds: the valid and broken config corpora of tests/api/corpus.

Checked: no exception, ever (YAML in, findings out); the verdict agrees with the findings (a
model exactly when no finding is an error); every finding names the file, a line within the
text, and its kind, namespace, name, field and a message, is one line as ``tulle validate``
prints it and JSON as ``-o json`` prints it, in file and line order; and config that passes,
dumped back to YAML as the API shows it (``model_dump``), passes again as the same resources
and the same model.
"""

from __future__ import annotations

import json

from fuzz.support.checks import calling, check, guarded
from fuzz.support.runner import instrumented, main

with instrumented("tulle"):
    import yaml

    from tulle.api import Validation, validate_text

FILE = "fuzz.yaml"
KNOWN_HOSTS = ("registered.default.svc.cluster.local",)  # as the registry would add


def check_findings(result: Validation, text: str) -> None:
    """Each finding is complete, placed within the text, printable on one line."""
    lines = len(text.splitlines()) + 1  # YAML breaks lines at CR too (and NEL, LS, PS)
    for finding in result.findings:
        line = finding.format()
        check(finding.file == FILE, "config.finding-file", line)
        check(0 <= finding.line <= lines + 1, "config.finding-line", f"{line} ({lines} lines)")
        parts = (finding.kind, finding.namespace, finding.name, finding.field, finding.message)
        check(all(parts), "config.finding-parts", repr(finding))
        check("\n" not in line and "\r" not in line, "config.finding-one-line", repr(line))
        with calling("Finding.to_dict"):
            json.dumps(finding.to_dict())
    order = [(f.file, f.line, f.field, f.message) for f in result.findings]
    check(order == sorted(order), "config.finding-order")
    check(result.ok == (result.model is not None), "config.verdict", str(result.findings))


def check_round_trip(result: Validation) -> None:
    """Accepted config, shown as the API shows it and applied again, is the same config."""
    shown = [
        item.resource.model_dump(mode="json", by_alias=True, exclude_none=True)
        for item in result.loaded
    ]
    with calling("yaml.safe_dump_all (the API's view of accepted resources)"):
        dumped = yaml.safe_dump_all(shown, allow_unicode=True)
    with calling("validate_text (accepted config, dumped and read again)"):
        again = validate_text(dumped, FILE, known_hosts=KNOWN_HOSTS)
    errors = [f.format() for f in again.findings if f.severity.value == "ERROR"]
    check(again.ok, "config.round-trip-accepted", lambda: f"{errors}\n{dumped}")
    check(again.resources == result.resources, "config.round-trip-resources", dumped)
    check(again.model == result.model, "config.round-trip-model", dumped)


def one_input(data: bytes) -> None:
    """One fuzz input: YAML text."""
    text = data.decode("utf-8", "replace")
    with calling("validate_text"):
        result = validate_text(text, FILE, known_hosts=KNOWN_HOSTS)
    check_findings(result, text)
    if result.ok:
        check_round_trip(result)


if __name__ == "__main__":
    main("config_loader", guarded(one_input), max_len=8192, dict_name="config")
