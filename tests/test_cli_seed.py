"""`digitstream reproduce-seed` run as users run it: a subprocess of the installed CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_learner import SEED_SCORES_AFTER_5_EPOCHS_ON_IMAGE_0


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "digitstream", *args], capture_output=True, text=True, timeout=120)


def test_reproduce_seed_prints_the_posts_scores_and_test_accuracy(mnist_dir: Path) -> None:
    result = run_cli("reproduce-seed", "--data", str(mnist_dir))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    scores = ast.literal_eval(next(line.strip() for line in lines if line.strip().startswith("[")))
    assert scores == pytest.approx(SEED_SCORES_AFTER_5_EPOCHS_ON_IMAGE_0, abs=1e-12)
    assert "predicted: 5" in result.stdout
    assert "test accuracy (10000 images): 74.47%" in result.stdout


def test_reproduce_seed_with_a_wrong_data_path_says_what_to_pass_and_exits_2(tmp_path: Path) -> None:
    result = run_cli("reproduce-seed", "--data", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "train-images-idx3-ubyte" in result.stderr
    assert "Traceback" not in result.stderr
