"""Terminal output: a one-line progress bar with samples/s and ETA, and bar charts of probabilities."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

__all__ = ["ProgressLine", "bar_chart", "format_count", "format_duration", "supports_unicode"]


def supports_unicode(stream: TextIO) -> bool:
    """Whether ``stream`` can print block characters (else ASCII is used)."""
    encoding = getattr(stream, "encoding", None) or "ascii"
    try:
        "█▏".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def format_duration(seconds: float) -> str:
    """``1:02:03``, ``2:03`` or ``0:05``; ``--:--`` when unknown."""
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "--:--"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_count(value: float) -> str:
    """Thousands separated: ``12,345``."""
    return f"{round(value):,}"


class ProgressLine:
    """A progress bar redrawn in place on a terminal, e.g. ``[#####-----] 5,000/10,000 50% 9,812/s ETA 0:01``.

    On a stream that is not a terminal (a log, a pipe) nothing is drawn while running, so logs stay
    clean; :meth:`finish` always writes the final line. Redraws are limited to ``max_fps`` per second.
    """

    def __init__(
        self,
        total: int | None,
        *,
        stream: TextIO | None = None,
        unit: str = "samples",
        width: int = 24,
        max_fps: float = 8.0,
    ) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.unit = unit
        self.width = width
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._unicode = supports_unicode(self.stream)
        self._min_interval = 1.0 / max_fps
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._last_len = 0
        self.done = 0
        self.extra = ""

    def update(self, done: int, extra: str = "") -> None:
        """Record progress; redraws if the terminal was last drawn long enough ago."""
        self.done, self.extra = done, extra
        now = time.monotonic()
        if self.interactive and now - self._last_draw >= self._min_interval:
            self._last_draw = now
            self._draw(self.render(now))

    def render(self, now: float | None = None) -> str:
        """The current line (without any carriage return)."""
        elapsed = (now if now is not None else time.monotonic()) - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        parts = []
        if self.total:
            fraction = min(1.0, self.done / self.total)
            filled = int(fraction * self.width)
            full, empty = ("█", "·") if self._unicode else ("#", "-")
            parts.append(f"[{full * filled}{empty * (self.width - filled)}]")
            parts.append(f"{format_count(self.done)}/{format_count(self.total)} {fraction:4.0%}")
        else:
            parts.append(f"{format_count(self.done)} {self.unit}")
        parts.append(f"{format_count(rate)} {self.unit}/s")
        if self.total:
            remaining = (self.total - self.done) / rate if rate > 0 else float("inf")
            parts.append(f"ETA {format_duration(remaining)}")
        else:
            parts.append(format_duration(elapsed))
        if self.extra:
            parts.append(self.extra)
        return "  ".join(parts)

    def finish(self) -> None:
        """Write the final state and end the line."""
        line = self.render()
        if self.interactive:
            self._draw(line)
            self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _draw(self, line: str) -> None:
        pad = " " * max(0, self._last_len - len(line))
        self.stream.write("\r" + line + pad)
        self.stream.flush()
        self._last_len = len(line)


def bar_chart(probabilities: Sequence[float], *, width: int = 30, unicode: bool = True, mark: int | None = None) -> str:
    """One line per digit: ``7 ██████████████▌   48.3%``, the ``mark``-ed digit flagged with ``<``.

    Bars use eighth-blocks on terminals that can print them, ``#`` otherwise.
    """
    lines = []
    for digit, p in enumerate(probabilities):
        value = min(1.0, max(0.0, float(p)))
        bar = _bar(value * width, unicode)
        flag = "  <" if digit == mark else ""
        lines.append(f"  {digit} {bar:<{width}} {value:6.1%}{flag}")
    return "\n".join(lines)


_EIGHTHS = " ▏▎▍▌▋▊▉"


def _bar(cells: float, unicode: bool) -> str:
    if not unicode:
        return "#" * round(cells)
    whole, eighths = int(cells), int((cells - int(cells)) * 8)
    return "█" * whole + (_EIGHTHS[eighths] if eighths else "")
