"""The hand-over benchmark runs end to end (its figures are timing goals: BENCHMARKS.md, not asserted here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digitstream.benchmarks.handover import run, text


def test_the_handover_benchmark_measures_a_takeover_and_a_join(
    mnist_train: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    images, labels = mnist_train
    report = run(images.reshape(len(labels), -1)[:500], labels[:500].astype(np.int64), tmp_path, models=6, rounds=1,
                 lease_ttl=1.0)  # fmt: skip
    assert report["death_seconds"][0] is not None, "the dead pool's models learned again within 60 s"
    assert report["join_seconds"][0] is not None, "the joiner held its rendezvous share within 60 s"
    assert "joiner holding its share" in text(report)
