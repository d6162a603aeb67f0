"""The example alert rules (deploy/prometheus) are valid, fire on the stories they are for, and use real series."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from digitstream.service.learner_metrics import __doc__ as LEARNER_SERIES

RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not installed (Debian's `prometheus` package provides it; scripts/setup.sh installs it)")
    return found


def test_promtool_accepts_the_rules(promtool: str) -> None:
    done = subprocess.run([promtool, "check", "rules", str(RULES / "alerts.yml")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 4 rules found" in done.stdout


def test_each_alert_fires_on_its_story_and_not_on_a_healthy_one(promtool: str) -> None:
    done = subprocess.run([promtool, "test", "rules", str(RULES / "alerts_test.yml")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_name_only_series_the_service_exports() -> None:
    rules = (RULES / "alerts.yml").read_text()
    used = set(re.findall(r"\b(digitstream_[a-z_]+)", rules))
    exported = {name.removesuffix("_total") for name in re.findall(r"``(digitstream_[a-z_]+)``", LEARNER_SERIES or "")}
    assert used, "the rules use digitstream series"
    for name in used:
        assert name.removesuffix("_total") in exported, f"{name} is not a series of service.learner_metrics"
