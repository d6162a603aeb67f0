"""The benchmark suite's pictures (matplotlib, Agg backend: no display needed), written as PNG files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: render to files only, on machines without a display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from digitstream.benchmarks.learners import Result

OURS = "#1f77b4"
OTHERS = "#9e9e9e"
DPI = 110


def learner_throughput(results: Sequence[Result], path: Path) -> Path:
    """Horizontal bars of samples/s (log scale), this project's learners highlighted."""
    measured = [r for r in results if r.seconds]
    names = [r.name for r in measured][::-1]
    rates = [r.rate for r in measured][::-1]
    colors = [OURS if name.startswith("digitstream") else OTHERS for name in names]
    fig, ax = plt.subplots(figsize=(8.5, 0.55 * len(names) + 1.4))
    bars = ax.barh(names, rates, color=colors)
    ax.set_xscale("log")
    ax.set_xlabel("samples learned per second (median, log scale)")
    ax.set_title("Learner throughput (each sample predicted, then learned)", fontsize=11)
    for bar, rate in zip(bars, rates, strict=True):
        ax.text(rate * 1.08, bar.get_y() + bar.get_height() / 2, f"{rate:,.0f}", va="center", fontsize=8)
    ax.set_xlim(min(rates) / 2, max(rates) * 8)
    ax.grid(axis="x", which="major", alpha=0.3)
    return _save(fig, path)


def learning_curves(results: Sequence[Result], served_curve: Sequence[Sequence[float | None]], path: Path) -> Path:
    """Prequential accuracy against samples learned, every learner on the same stream.

    ``served_curve`` is the worker's own curve as served by ``GET /model`` (``metrics.learning_curve``,
    the numbers the dashboard draws): it must lie on this project's softmax line.
    """
    fig, ax = plt.subplots(figsize=(8.5, 5))
    for r in results:
        if not r.curve:
            continue
        xs, ys = zip(*r.curve, strict=True)
        ours = r.name.startswith("digitstream")
        ax.plot(xs, np.array(ys) * 100, label=r.name, linewidth=2.2 if ours else 1.3, alpha=1.0 if ours else 0.85)
    points = [(p[0], p[1]) for p in served_curve if p[0] is not None and p[1] is not None]
    if points:
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, np.array(ys) * 100, "o", color="black", markersize=4, fillstyle="none",
                label="worker, served by GET /model (dashboard)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlim(left=10)  # before ~10 samples the accuracy so far is noise
    ax.set_xlabel("samples learned (log scale; the slow learners see a prefix of the stream)")
    ax.set_ylabel("prequential accuracy so far (%)")
    ax.set_title("Learning curves on the MNIST training stream, in order")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def accuracy_against_speed(results: Sequence[Result], path: Path) -> Path:
    """Each learner as a point: prequential accuracy (on what it saw) against samples/s, log scale.

    Up and to the right is better. The learners that saw only a prefix of the stream are drawn
    hollow: their accuracy is that of the early, easier-to-get-wrong part of the stream.
    """
    measured = [r for r in results if r.seconds and r.prequential is not None]
    full = max((r.samples for r in measured), default=0)
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    for r in measured:
        ours = r.name.startswith("digitstream")
        colour = OURS if ours else OTHERS
        ax.plot(r.rate, r.prequential * 100, "o", markersize=8, color=colour,  # type: ignore[operator]
                fillstyle="full" if r.samples == full else "none", markeredgewidth=1.5)  # fmt: skip
        label = r.name if r.samples == full else f"{r.name} ({r.samples:,} samples)"
        ax.annotate(label, (r.rate, r.prequential * 100), textcoords="offset points", xytext=(7, 3),  # type: ignore[operator]
                    fontsize=7, color="#1d2330" if ours else "#555555")  # fmt: skip
    ax.set_xscale("log")
    rates = [r.rate for r in measured] or [1.0]
    ax.set_xlim(min(rates) / 2, max(rates) * 20)
    ax.set_xlabel("samples learned per second (median, log scale)")
    ax.set_ylabel("prequential accuracy (%)")
    ax.set_title("Accuracy against speed (filled: the whole stream; hollow: a prefix)", fontsize=11)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def freshness(seconds: Sequence[float], goal: float, path: Path) -> Path:
    """Empirical CDF of XADD -> served-model-has-learned-it, with the median and the goal marked."""
    ordered = np.sort(np.asarray(seconds, dtype=float))
    fractions = np.arange(len(ordered) + 1) / len(ordered)
    ordered_steps = np.concatenate([[0.0], ordered])  # 0 % until the fastest sample
    median = float(np.median(ordered))
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    ax.step(ordered_steps, fractions * 100, where="post", color=OURS, linewidth=2, label=f"{len(ordered)} samples")
    ax.axvline(median, color=OURS, linestyle=":", label=f"median {median:.3f} s")
    ax.axvline(goal, color="#d62728", linestyle="--", label=f"goal: median <= {goal:g} s")
    ax.set_xlim(0, max(goal * 1.1, float(ordered[-1]) * 1.1))
    ax.set_ylim(0, 101)
    ax.set_xlabel("seconds from XADD of a sample to a served model that has learned it")
    ax.set_ylabel("share of samples (%)")
    ax.set_title("Served-model freshness (cumulative distribution)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
