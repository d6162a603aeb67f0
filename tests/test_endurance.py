"""The short endurance run (CI): predictions never fail and nothing is lost or learned twice while the worker
is SIGKILLed and Redis is SIGKILLed twice (and restarted once) under load, with ``appendfsync always``.
The 10-minute run is ``python -m digitstream.benchmarks.endurance``; the bounds are derived in
``benchmarks/endurance_report.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from digitstream.benchmarks.endurance_report import deadletter_bound, stream_bound
from tests.cli_support import REPO, cli_env

pytestmark = pytest.mark.slow

MINUTES = 0.5  # 30 s of load; ~40 s in all with the start-up and the drain

Run = tuple[subprocess.CompletedProcess[str], dict[str, Any]]  # the finished process, its JSON report


@pytest.fixture(scope="module")
def endurance(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One short endurance run, shared by the tests below: (the finished process, its JSON report)."""
    workdir = tmp_path_factory.mktemp("endurance")
    report = workdir / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "digitstream.benchmarks.endurance", "--minutes", str(MINUTES), "--data", str(mnist_dir),
         "--workdir", str(workdir), "--json", str(report)],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert report.exists(), done.stdout + done.stderr
    return done, json.loads(report.read_text())


def test_the_short_run_meets_every_goal_and_says_so(endurance: Run) -> None:
    done, _ = endurance
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all goals met" in done.stdout
    assert "| check | measured | verdict |" in done.stdout


def test_no_prediction_fails_while_the_worker_is_killed_and_redis_is_killed(
    endurance: Run,
) -> None:
    _, report = endurance
    assert len(report["timeline"]["kills"]) >= 2
    assert [event["kind"] for event in report["timeline"]["redis"]] == ["SIGKILL", "SIGTERM", "SIGKILL"]
    assert all(event["stop"] < event["back"] for event in report["timeline"]["redis"])
    totals = report["load"]["totals"]
    assert totals.get("ok", 0) > 1000
    assert set(totals) <= {"ok", "503"}, report["load"]["examples"]
    assert all(counts.get("ok", 0) > 0 for counts in report["load"]["per_url"].values())
    failed = next(g for g in report["goals"] if g["what"].startswith("failed prediction requests"))
    assert failed["met"] is True, failed


def test_every_published_sample_is_learned_exactly_once_and_served_by_both_replicas(
    endurance: Run,
) -> None:
    _, report = endurance
    final = report["final"]
    assert final["published"] > 15_000
    assert final["learned"] == final["published"], "nothing lost, nothing twice"
    assert final["acknowledged_lost"] == {"resent": 0, "lost": 0}, "appendfsync always: no acknowledged write lost"
    assert report["appendfsync"] == "always"
    assert final["bad_published"] > 0 and final["deadletter_count"] == final["bad_published"]
    assert list(final["served"].values()) == [final["learned"]] * 2


def test_the_stream_and_the_dead_letters_stay_within_their_derived_bounds_despite_the_restarts(
    endurance: Run,
) -> None:
    _, report = endurance
    peak = max(length for _, length, _, _ in report["stream"])
    assert peak <= stream_bound(report)[0]
    assert peak < report["final"]["published"]  # trimmed, not merely short
    assert report["final"]["stream_length"] < report["final"]["published"]
    assert max(dead for _, _, _, dead in report["stream"]) <= deadletter_bound(report)[0]
