"""Learner comparison, side by side in one run: samples/s and accuracy on the same MNIST stream.

Every learner sees the training stream in order, predicting each sample before learning it
(prequential); the slow ones see a prefix only. Timings are medians over repetitions taken in
alternation, so a noisy neighbour slows all of them alike; the table reports ratios to this
project's learners. The default mlp also learns 5 passes over the stream (as the demo loops) for
its test accuracy then.

    python benchmarks/learners.py [--data DIR] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitstream.datasets import find_mnist, load_mnist
from digitstream.learner import HyperParameters, new_learner
from digitstream.learner.reference import numpy_loop, numpy_mlp, pure_python_seed

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    name: str
    samples: int
    seconds: list[float] = field(default_factory=list)
    prequential: float | None = None
    test: float | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)  # (samples seen, prequential accuracy so far)
    note: str = ""

    @property
    def rate(self) -> float:
        return self.samples / statistics.median(self.seconds)


def prequential_curve(correct: np.ndarray, points: int = 60) -> list[tuple[int, float]]:
    """Cumulative prequential accuracy at ~``points`` evenly spaced sample counts and as many spaced
    evenly on a log scale (the plots use one: the slow learners see only a prefix of the stream)."""
    cumulative = np.cumsum(correct) / np.arange(1, len(correct) + 1)
    n = len(correct)
    marks = np.unique(np.concatenate([np.linspace(1, n, points), np.geomspace(1, n, points)]).astype(int))
    return [(int(m), float(cumulative[m - 1])) for m in marks]


MLP_PASSES = 5
SOFTMAX, SEED, MLP = (
    "digitstream softmax (exact per-sample)",
    "digitstream seed (exact per-sample)",
    "digitstream mlp (exact per-sample)",
)


def ours(rule: str, **overrides: Any) -> Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], dict[str, Any]]:
    def run(x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> dict[str, Any]:
        learner = new_learner(HyperParameters.for_rule(rule, **overrides))  # type: ignore[arg-type]
        start = time.perf_counter()
        predictions = learner.learn_many(x, y)
        seconds = time.perf_counter() - start
        test = float(np.mean(learner.predict_many(xt) == yt))
        return {"seconds": seconds, "correct": predictions == y, "test": test}

    return run


def numpy_loop_seed(x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> dict[str, Any]:
    start = time.perf_counter()
    _, _, predictions = numpy_loop(HyperParameters.for_rule("seed"), x, y)
    return {"seconds": time.perf_counter() - start, "correct": predictions == y}


def numpy_mlp_reference(x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> dict[str, Any]:
    start = time.perf_counter()
    _, predictions = numpy_mlp(HyperParameters.for_rule("mlp"), x, y)
    return {"seconds": time.perf_counter() - start, "correct": predictions == y}


def mlp_passes(x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray, passes: int) -> list[float]:
    """Test accuracy of the default mlp after each of ``passes`` in-order passes over the stream."""
    learner = new_learner(HyperParameters.for_rule("mlp"))
    accuracies = []
    for _ in range(passes):
        learner.learn_many(x, y)
        accuracies.append(float(np.mean(learner.predict_many(xt) == yt)))
    return accuracies


def sklearn_mlp(x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> dict[str, Any]:
    """scikit-learn's MLPClassifier (256 ReLU units, its defaults: Adam) fed one sample per partial_fit."""
    from sklearn.neural_network import MLPClassifier

    model = MLPClassifier(hidden_layer_sizes=(256,), random_state=0)
    inputs = x.astype(np.float64) / 255.0
    classes = np.arange(10)
    correct = np.zeros(len(y), dtype=bool)
    start = time.perf_counter()
    for i in range(len(y)):
        if i:  # before the first partial_fit it has no classes to predict
            correct[i] = model.predict(inputs[i : i + 1])[0] == y[i]
        model.partial_fit(inputs[i : i + 1], y[i : i + 1], classes=classes)
    return {"seconds": time.perf_counter() - start, "correct": correct}


def pure_python(x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> dict[str, Any]:
    images, labels = x.tolist(), y.tolist()
    start = time.perf_counter()
    pure_python_seed(images, labels, epochs=1)
    return {"seconds": time.perf_counter() - start}


def river_model(kind: str) -> Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], dict[str, Any]]:
    def run(x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> dict[str, Any]:
        from river import linear_model, multiclass

        model: Any = (
            linear_model.SoftmaxRegression()
            if kind == "softmax"
            else multiclass.OneVsRestClassifier(linear_model.LogisticRegression())
        )
        rows = [{j: v / 255.0 for j, v in enumerate(image) if v} for image in x.tolist()]
        correct = np.zeros(len(y), dtype=bool)
        start = time.perf_counter()
        for i, (row, label) in enumerate(zip(rows, y.tolist(), strict=True)):
            correct[i] = model.predict_one(row) == label
            model.learn_one(row, label)
        return {"seconds": time.perf_counter() - start, "correct": correct}

    return run


def vowpal_wabbit(
    arguments: str, test: bool = True
) -> Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], dict[str, Any]]:
    """VW with ``arguments``; ``test``: also score the test set (not for the slow ones, which see a prefix)."""

    def run(x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> dict[str, Any]:
        return _vowpal_wabbit(arguments, x, y, xt if test else xt[:0], yt if test else yt[:0])

    return run


def _vowpal_wabbit(arguments: str, x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> dict[str, Any]:
    from vowpalwabbit import pyvw

    def line(image: list[int], label: int | None) -> str:
        features = " ".join(f"{j}:{v / 255.0:.6f}" for j, v in enumerate(image) if v)
        return f"{'' if label is None else label + 1} | {features}"

    lines = [line(image, label) for image, label in zip(x.tolist(), y.tolist(), strict=True)]
    vw = pyvw.Workspace(f"{arguments} --quiet")
    correct = np.zeros(len(y), dtype=bool)
    start = time.perf_counter()
    for i, text in enumerate(lines):
        example = vw.parse(text)
        correct[i] = vw.predict(example) == y[i] + 1
        vw.learn(example)
        vw.finish_example(example)
    seconds = time.perf_counter() - start
    test_correct = 0
    for image, label in zip(xt.tolist(), yt.tolist(), strict=True):
        test_correct += vw.predict(line(image, None)) == label + 1
    vw.finish()
    out: dict[str, Any] = {"seconds": seconds, "correct": correct}
    if len(yt):
        out["test"] = test_correct / len(yt)
    return out


def run(data_dir: Path | None = None, repeats: int = 5, quick: bool = False) -> dict[str, Any]:
    """Run the comparison; returns {"results": [Result...], "train_size": n}."""
    directory = find_mnist(data_dir, download=False)
    train, test = load_mnist(directory, "train"), load_mnist(directory, "test")
    x, y, xt, yt = train.images, train.labels.astype(np.int64), test.images, test.labels
    n = len(y)
    mlp = HyperParameters.for_rule("mlp")
    plan: list[tuple[str, int, Callable[..., dict[str, Any]], str]] = [
        (SOFTMAX, n, ours("softmax"), ""),
        (SEED, n, ours("seed"), ""),
        (MLP, n, ours("mlp"), f"{mlp.hidden} hidden units, averaged every {mlp.average_every} samples (the default)"),
        ("digitstream mlp, no averaging", n, ours("mlp", averaging=False), "the same without the served average"),
        ("numpy reference, mlp rule", 200 if quick else 1000, numpy_mlp_reference, "one sample per Python iteration"),
        ("numpy loop, seed rule", 2000 if quick else 5000, numpy_loop_seed, "one sample per Python iteration"),
        ("the post's pure Python, seed rule", 100 if quick else 300, pure_python, "lists of floats"),
        ("river SoftmaxRegression", 1000 if quick else 3000, river_model("softmax"), "river 0.26 defaults"),
        ("river OneVsRest(LogisticRegression)", 1000 if quick else 3000, river_model("ovr"), "river 0.26 defaults"),
    ]
    try:
        import sklearn  # noqa: F401

        plan.append(("scikit-learn MLPClassifier.partial_fit", 100 if quick else 500, sklearn_mlp,
                     "256 ReLU units, Adam (its defaults), one sample per call"))  # fmt: skip
    except ImportError:
        plan.append(("scikit-learn MLPClassifier.partial_fit", 0, pure_python, "skipped: pip install scikit-learn"))
    try:
        import vowpalwabbit  # noqa: F401

        plan.append(("Vowpal Wabbit --oaa 10 (pyvw)", n, vowpal_wabbit("--oaa 10"), "predict + learn per example"))
        nn, note = vowpal_wabbit("--oaa 10 --nn 256", test=False), "256 hidden units, its defaults"
        plan.append(("Vowpal Wabbit --oaa 10 --nn 256 (pyvw)", 200 if quick else 1000, nn, note))
    except ImportError:
        for name in ("Vowpal Wabbit --oaa 10 (pyvw)", "Vowpal Wabbit --oaa 10 --nn 256 (pyvw)"):
            plan.append((name, 0, pure_python, "skipped: pip install vowpalwabbit"))
    for rule in ("softmax", "mlp"):  # compile (or load the cache) outside the timings
        ours(rule)(x[:10], y[:10], xt[:10], yt[:10])
    results = [Result(name, size, note=note) for name, size, _, note in plan]
    slow_repeats = 1 if quick else max(1, repeats // 2)
    for r in range(repeats):
        for result, (_, size, fn, _) in zip(results, plan, strict=True):
            if size == 0 or (r >= slow_repeats and size < n):
                continue
            out = fn(x[:size], y[:size], xt, yt)
            result.seconds.append(out["seconds"])
            if "correct" in out and result.prequential is None:
                result.prequential = float(np.mean(out["correct"]))
                result.curve = prequential_curve(out["correct"])
            if "test" in out and result.test is None:
                result.test = out["test"]
    passes = 2 if quick else MLP_PASSES
    return {"results": results, "train_size": n, "repeats": repeats, "mlp_passes": mlp_passes(x, y, xt, yt, passes)}


def by_name(report: dict[str, Any]) -> dict[str, Result]:
    return {r.name: r for r in report["results"]}


def table(report: dict[str, Any]) -> str:
    results: list[Result] = report["results"]
    named = by_name(report)
    base, mlp = named[SOFTMAX].rate, named[MLP].rate
    rows = [
        "| learner | samples | samples/s (median) | vs digitstream softmax | vs digitstream mlp | prequential "
        "| test (10k) | note |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        if not r.seconds:
            rows.append(f"| {r.name} | — | — | — | — | — | — | {r.note} |")
            continue
        preq = f"{r.prequential:.2%}" if r.prequential is not None else "—"
        test = f"{r.test:.2%}" if r.test is not None else "—"
        rows.append(
            f"| {r.name} | {r.samples:,} | {r.rate:,.0f} | {r.rate / base:.4g}x | {r.rate / mlp:.4g}x | {preq} "
            f"| {test} | {r.note}{' ' if r.note else ''}({len(r.seconds)} runs) |"
        )
    passes = report.get("mlp_passes") or []
    if passes:
        rows.append("")
        rows.append(
            f"digitstream mlp, test accuracy after each of {len(passes)} in-order passes over the stream: "
            + ", ".join(f"{a:.2%}" for a in passes)
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="MNIST IDX directory")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller prefixes for the slow learners")
    args = parser.parse_args(argv)
    data = args.data or Path(os.environ.get("DIGITSTREAM_TEST_DATA", REPO.parent / "shared" / "data" / "mnist"))
    report = run(data, repeats=args.repeats, quick=args.quick)
    print(f"MNIST training stream: {report['train_size']:,} samples in order, one pass; {os.cpu_count()} cores")
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
