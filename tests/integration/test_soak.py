"""The soak of ``make soak`` (bench/soak.py), shortened to 30 seconds of traffic for ``make test``.

The real daemon, killed with SIGKILL every few seconds under mixed good and bad traffic on
both sockets, against a receiver that fails a quarter of the attempts at random.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
soak = importlib.import_module("soak")


@pytest.mark.sqlite_only
@pytest.mark.timeout(600)
def test_kill9_under_mixed_traffic_loses_and_misroutes_no_acked_event(tmp_path):
    """SQLite only: the heaviest test (a minute or more); PostgreSQL's kill -9 is test_cluster's."""
    result = soak.run(30, tmp_path, drain=300, seed=6, rate=30, log=lambda line: None)
    log = (tmp_path / "daemon.log").read_text(errors="replace").splitlines()
    report = "\n".join([*result.lines(), "daemon log (end):", *log[-40:]])
    # it exercised what it claims: kills, acked and pushed events, refused bad frames, deliveries
    assert result.kills > 0, report
    assert result.acked > 0 and result.pull_sent > 0, report
    assert result.refused > 0 and result.bad_pushed > 0, report
    assert result.delivered > 0 and result.statuses.get(500, 0) > 0, report
    # and held what it promises
    assert result.lost == 0, report
    assert result.wrong == 0, report
    assert result.misjudged == 0 and result.bad_accepted == 0 and result.good_refused == 0, report
