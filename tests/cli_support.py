"""Running the real ``digitstream`` command line as a subprocess, as users and scripts do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from digitstream.settings import without_settings

REPO = Path(__file__).resolve().parent.parent


def cli_env(**extra: str) -> dict[str, str]:
    """The current environment without any DIGITSTREAM_* setting (so the caller's shell cannot leak in)."""
    env = without_settings(os.environ)
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``digitstream ARGS...``; returns the finished process with its text stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "digitstream", *args],
        env=env if env is not None else cli_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    """The command failed with ``code`` and one ``Error: ...`` line on stderr holding every fragment."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
