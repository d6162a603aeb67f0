"""Slow, obviously-correct implementations: the definitions the fast kernels are tested against.

``numpy_loop`` applies the delta rule one sample per Python iteration with dense numpy
(the "plain numpy loop" of the benchmarks); ``numpy_mlp`` does the same for the ``mlp`` rule;
``pure_python_seed`` is the original blog post's pure-Python algorithm (lists of floats), kept
to measure how far we have come.
"""

from __future__ import annotations

import numpy as np

from .mlp_init import initial_arrays
from .params import HyperParameters


def numpy_loop(
    params: HyperParameters, images: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Learn in order; returns (served weights (10, 784), served bias (10,), predictions)."""
    x_all = images.astype(np.float64) / (1.0 if params.rule == "seed" else 255.0)
    w = np.zeros((10, 784))
    if params.rule == "seed":
        w += 0.0001 * np.arange(10)[:, None]
    b = np.zeros(10)
    acc_w = np.zeros_like(w)
    acc_b = np.zeros_like(b)
    norm = 0.0
    predictions = np.empty(len(labels), dtype=np.int64)
    for t, (x, label) in enumerate(zip(x_all, labels, strict=True)):
        scores = w @ x + (b if params.rule == "softmax" else 0.0)
        averaged = params.averaging and t > 0
        served = scores - (acc_w @ x + acc_b) / norm if averaged else scores
        predictions[t] = int(np.argmax(served))
        if params.rule == "softmax":
            e = np.exp(scores - scores.max())
            out = e / e.sum()
        else:
            out = scores
        target = np.zeros(10)
        target[label] = 1.0
        rate = params.learning_rate
        if params.schedule == "inverse_scaling":
            rate = rate / (1.0 + t / params.decay) ** params.power
        delta = rate * (out - target)
        w -= np.outer(delta, x)
        if params.rule == "softmax":
            b -= delta
        if averaged:
            acc_w -= np.outer(norm * delta, x)
            acc_b -= norm * delta
        if params.averaging:
            norm += (t + 1.0) ** params.average_power
    if params.averaging and len(labels):
        return w - acc_w / norm, b - acc_b / norm, predictions
    return w, b, predictions


def numpy_mlp(
    params: HyperParameters, images: np.ndarray, labels: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The mlp rule, dense numpy, one sample per iteration; returns (state arrays, predictions).

    Float32 like the learner; numpy adds in its own order, so the results agree with the compiled
    kernel to rounding, not bit for bit.
    """
    a = initial_arrays(params)
    w1, b1, w2, b2 = a["w1"], a["b1"], a["w2"], a["b2"]
    x_all = (images.reshape(len(labels), 784).astype(np.float64) / 255.0).astype(np.float32)
    predictions = np.empty(len(labels), dtype=np.int64)
    for t, (x, label) in enumerate(zip(x_all, labels, strict=True)):
        h = np.maximum(b1 + x @ w1, np.float32(0.0))
        scores = b2 + h @ w2
        if params.averaging and a["norm"][0] > 0:
            served_h = np.maximum(a["avg_b1"] + x @ a["avg_w1"], np.float32(0.0))
            predictions[t] = int(np.argmax(a["avg_b2"] + served_h @ a["avg_w2"]))
        else:
            predictions[t] = int(np.argmax(scores))
        e = np.exp(scores.astype(np.float64) - scores.max())
        rate = params.learning_rate
        if params.schedule == "inverse_scaling":
            rate = rate / (1.0 + t / params.decay) ** params.power
        target = np.zeros(10)
        target[label] = 1.0
        d = (rate * (e / e.sum() - target)).astype(np.float32)
        dh = np.where(h > 0, w2 @ d, np.float32(0.0))  # with w2 before its update
        w2 -= np.outer(h, d)
        b2 -= d
        b1 -= dh
        w1 -= np.outer(x, dh)
        if params.averaging and (t + 1) % params.average_every == 0:
            c = (t + 1.0) ** params.average_power
            a["norm"][0] += c
            f = np.float32(c / a["norm"][0])
            for name in ("w1", "b1", "w2", "b2"):
                a["avg_" + name] += f * (a[name] - a["avg_" + name])
    return a, predictions


def pure_python_seed(images: list[list[int]], labels: list[int], epochs: int = 1) -> list[list[float]]:
    """The post's single-layer network in pure Python (seed rule); returns W as 10 lists of 784."""
    weights = [[0.0001 * k] * 784 for k in range(10)]
    for _ in range(epochs):
        for pixels, label in zip(images, labels, strict=True):
            x = [float(p) for p in pixels]
            scores = [sum(w * v for w, v in zip(row, x, strict=True)) for row in weights]
            for k in range(10):
                delta = scores[k] - (1.0 if k == label else 0.0)
                row = weights[k]
                for j in range(784):
                    row[j] -= 1e-7 * delta * x[j]
    return weights
