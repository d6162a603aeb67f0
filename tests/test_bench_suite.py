"""``digitstream bench --quick`` writes BENCHMARKS.md and its plots: a smoke test, no timing asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_support import run_cli

pytestmark = pytest.mark.slow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ("learner_throughput.png", "learning_curves.png", "accuracy_vs_speed.png", "freshness.png")


@pytest.fixture(scope="module")
def bench_out(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    # timeout: ~2.5 min of work at small sizes (the mlp peers included), more on a busy machine
    done = run_cli("bench", "--quick", "--data", str(mnist_dir), "--out", str(out), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"wrote {out / 'BENCHMARKS.md'}" in done.stdout
    return out


def test_benchmarks_md_has_the_machine_the_goals_and_every_part(bench_out: Path) -> None:
    text = (bench_out / "BENCHMARKS.md").read_text()
    assert text.startswith("# digitstream benchmarks")
    assert "`digitstream bench --quick`" in text and "**Quick run**" in text
    assert "**Machine:**" in text and "cores" in text and "**Versions:**" in text and "numba" in text
    for section in ("## Headline", "## Goals:", "## Learners", "## Worker ingest", "## Publisher",
                    "## Packed entries", "## Service", "## What an anonymous request costs",
                    "## Stream fuzzer"):  # fmt: skip
        assert f"\n{section}" in text, section
    for row in ("river SoftmaxRegression", "river OneVsRest(LogisticRegression)", "the post's pure Python",
                "numpy loop", "Vowpal Wabbit", "raw read + decode (ceiling)", "raw pipelined XADD",
                "GET /healthz (trivial)", "POST /predict", "freshness", "digitstream mlp (exact per-sample)",
                "numpy reference, mlp rule", "scikit-learn MLPClassifier.partial_fit", "--oaa 10 --nn 256",
                "worker, mlp rule (learn + snapshots)", "test accuracy after each of",
                "end to end, packed entries (1000)", "publisher, packed entries (1000)"):  # fmt: skip
        assert row in text, row


def test_every_goal_of_the_issues_gets_a_verdict(bench_out: Path) -> None:
    text = (bench_out / "BENCHMARKS.md").read_text()
    goals = text.split("\n## Goals:", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in goals.splitlines() if line.startswith("| ") and not line.startswith(("| goal", "| ---"))]
    # issue 14's: upload memory and CPU, /predict p99 under uploads (batches: full runs); issue 16's: the mlp's 5;
    # issue 13's: the stream fuzzer's 6; issue 18's: packed entries end to end (2), in the worker, in the publisher
    assert len(rows) == 11 + 3 + 5 + 6 + 4
    assert all(row.rstrip().endswith(("| met |", "| **NOT met** |")) for row in rows)


def test_the_served_learning_curve_matches_the_learners_own_numbers(bench_out: Path) -> None:
    text = (bench_out / "BENCHMARKS.md").read_text()
    assert "as served by `GET /model`" in text
    difference = float(text.split("by at most ", 1)[1].split(" ", 1)[0])
    assert difference <= 5e-7  # the worker rounds its metrics to 6 decimals


def test_the_plots_are_pngs_linked_from_the_report(bench_out: Path) -> None:
    text = (bench_out / "BENCHMARKS.md").read_text()
    for name in PLOTS:
        path = bench_out / "docs" / "bench" / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        assert path.stat().st_size > 10_000, name
        assert f"](docs/bench/{name})" in text, name
