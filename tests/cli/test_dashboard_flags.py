"""The dashboard's command-line flags as a user gets them wrong: ``tulle controlplane
--prometheus`` with something that is not a URL, or with ``--scrape-targets`` too, and ``tulle
dashboard`` with no control plane to ask."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tulle.cli.main import app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prometheus", "prometheus:9090"], "--prometheus 'prometheus:9090': expected an http"),
        (["--prometheus", "http://p:9090", "--scrape-targets", "t.json"], "choose one"),
    ],
)
def test_controlplane_refuses_a_bad_traffic_source(args, message, tmp_path):
    result = CliRunner().invoke(app, ["controlplane", "--state-dir", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_dashboard_without_a_control_plane_says_where_it_looked():
    result = CliRunner().invoke(
        app, ["dashboard", "--no-browser", "--server", "http://127.0.0.1:9", "--token", "t"]
    )
    assert result.exit_code == 1
    assert "cannot reach the control plane at http://127.0.0.1:9" in result.output
