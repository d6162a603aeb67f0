"""Step timings of the Docker harness, shown live in pytest's output and kept in test-artifacts/docker/."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class Timings:
    """Records how long each harness step took; every line goes to ``write`` and to a log file."""

    def __init__(self, log_file: Path, write: Callable[[str], None] | None = None) -> None:
        self.log_file = log_file
        self.write = write
        self.steps: list[tuple[str, float]] = []
        log_file.parent.mkdir(parents=True, exist_ok=True)

    def note(self, message: str) -> None:
        line = f"[docker] {message}"
        if self.write is not None:
            self.write(line)
        with self.log_file.open("a") as log:
            log.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            seconds = time.monotonic() - start
            self.steps.append((name, seconds))
            self.note(f"{name}: {seconds:.1f} s")

    def summary(self) -> str:
        width = max((len(name) for name, _ in self.steps), default=0)
        lines = [f"  {name:<{width}}  {seconds:7.1f} s" for name, seconds in self.steps]
        total = sum(seconds for _, seconds in self.steps)
        return "\n".join(["docker harness timings:", *lines, f"  {'total':<{width}}  {total:7.1f} s"])
