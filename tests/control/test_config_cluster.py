"""Config from the cluster (``ConfigSources.set_cluster``): each resource judged on its own, the
last good version of a refused one kept, an unchanged one never dropped for another's change."""

from __future__ import annotations

from typing import Any

import yaml

from tests.control.test_config_sources import ROUTE, RULE, SUBSET_ROUTE, sources, timeout_of
from tulle.api.source import Document
from tulle.control.config import ConfigSources, key_of

__all__ = ["sources"]  # the fixture


def cluster(*texts: str) -> dict[Any, Document]:
    """Documents as tulle.kube hands them over (file ``kubernetes:KIND/NS/NAME``)."""
    found = {}
    for text in texts:
        data = yaml.safe_load(text)
        data["metadata"].setdefault("namespace", "default")
        key = key_of(data)
        assert key is not None
        found[key] = Document(f"kubernetes:{key[0]}/{key[1]}/{key[2]}", 1, data)
    return found


def test_cluster_resources_are_in_force_and_a_bad_version_keeps_the_last_good(
    sources: ConfigSources,
) -> None:
    result = sources.set_cluster(cluster(ROUTE % "3s"))
    assert result.changed
    assert list(result.accepted) == [("VirtualService", "default", "web")]
    assert result.refused == {}
    assert timeout_of(sources) == 3.0
    assert sources.source_of(("VirtualService", "default", "web")) == "kubernetes"
    result = sources.set_cluster(cluster(ROUTE % "-1s"))
    assert not result.changed
    [(key, findings)] = result.refused.items()
    assert key == ("VirtualService", "default", "web")
    assert findings[0].file == "kubernetes:VirtualService/default/web"
    assert "timeout" in findings[0].field
    assert timeout_of(sources) == 3.0  # the last good version stays
    # A new resource that is wrong from the start is simply not there.
    bad_rule = RULE.replace("subsets: [", "subsets: [{name: v1, labels: {app: web}}, ")
    result = sources.set_cluster({**cluster(ROUTE % "4s"), **cluster(bad_rule)})
    assert result.changed
    assert set(result.refused) == {("DestinationRule", "default", "web")}
    assert timeout_of(sources) == 4.0


def test_a_change_that_breaks_an_unchanged_resource_is_the_one_refused(
    sources: ConfigSources,
) -> None:
    assert sources.set_cluster(cluster(RULE, SUBSET_ROUTE)).refused == {}
    # The rule loses subset v1, which the (unchanged) route needs: the rule's change is refused,
    # the route stays.
    no_subsets = RULE.replace("subsets: [{name: v1, labels: {app: web}}]", "subsets: []")
    result = sources.set_cluster(cluster(no_subsets, SUBSET_ROUTE))
    assert set(result.refused) == {("DestinationRule", "default", "web")}
    assert "refused: with it" in result.refused[("DestinationRule", "default", "web")][0].message
    assert set(result.accepted) == {("VirtualService", "default", "web")}
    kept = sources.cluster_documents[("DestinationRule", "default", "web")]
    assert kept.data["spec"]["subsets"] == [{"name": "v1", "labels": {"app": "web"}}]


def test_applied_resources_win_over_the_clusters(sources: ConfigSources) -> None:
    sources.set_cluster(cluster(ROUTE % "3s"))
    applied = sources.apply(ROUTE % "7s", "applied.yaml")
    assert applied.accepted
    assert timeout_of(sources) == 7.0
    assert sources.source_of(("VirtualService", "default", "web")) == "applied"


def test_deleting_a_cluster_resource_over_the_api_says_where_it_lives(
    sources: ConfigSources,
) -> None:
    sources.set_cluster(cluster(ROUTE % "3s"))
    result = sources.delete(("VirtualService", "default", "web"))
    assert not result.accepted
    assert "it comes from the cluster: kubectl delete it there" in result.findings[0].message
    assert timeout_of(sources) == 3.0
