"""Compiled per-sample delta-rule loops (numba): the only hot code of the learner.

Why compiled: the model must be updated one example at a time (each prediction sees every
earlier update), which a vectorised numpy expression cannot do; a Python loop over samples
tops out near 36k samples/s, this loop runs well above 500k/s on one core.

Layout: weights are stored pixel-major, ``wt[j, k]`` for pixel ``j`` and class ``k``, so the 10
class weights of one pixel are contiguous and the loops over classes vectorise. Only non-zero
pixels are visited (an MNIST digit has ~19 % ink); skipping a zero pixel is exact, because
``w - a * d * 0.0 == w`` and ``w * 0.0`` adds nothing to a score.

Averaging is kept lazily. The served weights are the weighted mean of the iterates
``W_1..W_T`` with weights ``c_t = t ** average_power`` (0: Polyak-Ruppert's plain mean; larger
powers forget the poor early iterates faster). With ``D_t`` the update made at step ``t`` and
``C_t = c_1 + ... + c_t``, that mean is ``W_T - A_T / C_T`` where ``A_T = sum_t C_(t-1) * D_t``,
so averaging costs one more sparse update per sample instead of a dense pass.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numba
import numpy as np
from numba import njit

N_CLASSES = 10
N_PIXELS = 784

IDENTITY = 0
SOFTMAX = 1

SCHEDULE_CONSTANT = 0
SCHEDULE_INVERSE_SCALING = 1


@njit(cache=True, nogil=True, inline="always")
def _rate(eta0: float, schedule: int, decay: float, power: float, t: float) -> float:
    """Learning rate for the update numbered ``t`` (0-based count of earlier updates)."""
    if schedule == SCHEDULE_CONSTANT:
        return eta0
    return eta0 / _power(1.0 + t / decay, power)


@njit(cache=True, nogil=True, inline="always")
def _power(x: float, p: float) -> float:
    """``x ** p`` with the common exponents computed without a libm call (per-sample cost)."""
    if p == 0.0:
        return 1.0
    if p == 1.0:
        return x
    if p == 2.0:
        return x * x
    if p == 0.5:
        return math.sqrt(x)
    return x**p


@njit(cache=True, nogil=True, error_model="numpy")
def learn_loop(
    wt: np.ndarray,  # (784, 10) float64, updated in place
    bias: np.ndarray,  # (10,) float64, updated in place when use_bias
    acc_wt: np.ndarray,  # (784, 10) float64 averaging accumulator, updated when averaging
    acc_bias: np.ndarray,  # (10,) float64
    norm: np.ndarray,  # (1,) float64: C_t, the summed averaging weights of iterates 1..t
    images: np.ndarray,  # (n, 784) uint8, C-contiguous
    words: np.ndarray,  # the same memory seen as (n, 98) uint64, to skip 8 blank pixels at once
    labels: np.ndarray,  # (n,) int64 0..9
    scale: np.ndarray,  # (256,) float64: pixel value -> input value
    output: int,
    use_bias: bool,
    averaging: bool,
    average_power: float,
    eta0: float,
    schedule: int,
    decay: float,
    power: float,
    t0: int,
    predictions: np.ndarray,  # (n,) int8, out: the served model's prediction before each update
) -> None:
    """Predict then learn each sample in order; ``t0`` is the number of updates already made.

    Per-class values live in 10-tuples, not arrays: tuples are registers to LLVM, so the row
    updates below cannot alias them and vectorise (see ``compile_kernels``).
    """
    n = images.shape[0]
    nz = np.empty(N_PIXELS, dtype=np.int64)
    xs = np.empty(N_PIXELS, dtype=np.float64)
    zero = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    for i in range(n):
        t = t0 + i
        m = _gather_ink(images, words, i, scale, nz, xs)
        use_average = averaging and t > 0
        scores = _vec(bias) if use_bias else zero
        if use_average:
            acc_scores = _vec(acc_bias) if use_bias else zero
            for q in range(m):
                scores = _add_row(scores, wt, nz[q], xs[q])
                acc_scores = _add_row(acc_scores, acc_wt, nz[q], xs[q])
            # The served (averaged) model's scores: (W - A / C) x + (b - a / C).
            predictions[i] = _argmax(_axpy(scores, acc_scores, -1.0 / norm[0]))
        else:
            for q in range(m):
                scores = _add_row(scores, wt, nz[q], xs[q])
            predictions[i] = _argmax(scores)
        out = _softmax(scores) if output == SOFTMAX else scores
        rate = _rate(eta0, schedule, decay, power, float(t))
        delta = _scaled_error(out, labels[i], rate)  # rate * (output - onehot(label))
        if use_average:
            # Update t+1 (1-based) enters the accumulator with weight C_t (see module docstring).
            acc_delta = _axpy(zero, delta, norm[0])
            for q in range(m):
                _sub_row(wt, nz[q], delta, xs[q])
                _sub_row(acc_wt, nz[q], acc_delta, xs[q])
            if use_bias:
                _sub_vec(bias, delta)
                _sub_vec(acc_bias, acc_delta)
        else:
            for q in range(m):
                _sub_row(wt, nz[q], delta, xs[q])
            if use_bias:
                _sub_vec(bias, delta)
        if averaging:
            norm[0] += _power(t + 1.0, average_power)


@njit(cache=True, nogil=True, inline="always")
def _gather_ink(
    images: np.ndarray, words: np.ndarray, i: int, scale: np.ndarray, nz: np.ndarray, xs: np.ndarray
) -> int:
    """Indices and input values of the non-zero pixels of image ``i``; returns their count."""
    m = 0
    for w in range(N_PIXELS // 8):
        if words[i, w] != 0:
            base = w * 8
            for b in range(8):
                p = images[i, base + b]
                nz[m] = base + b
                xs[m] = scale[p]
                m += p != 0
    return m


@njit(cache=True, nogil=True, error_model="numpy")
def score_loop(
    wt: np.ndarray,
    bias: np.ndarray,
    images: np.ndarray,
    words: np.ndarray,
    scale: np.ndarray,
    use_bias: bool,
    out: np.ndarray,  # (n, 10) float64 scores
) -> None:
    """Scores of many images with fixed weights (same arithmetic as ``learn_loop``)."""
    nz = np.empty(N_PIXELS, dtype=np.int64)
    xs = np.empty(N_PIXELS, dtype=np.float64)
    zero = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    for i in range(images.shape[0]):
        m = _gather_ink(images, words, i, scale, nz, xs)
        scores = _vec(bias) if use_bias else zero
        for q in range(m):
            scores = _add_row(scores, wt, nz[q], xs[q])
        for k in range(N_CLASSES):
            out[i, k] = scores[k]


# -- 10-wide helpers: written out so that every class value stays a scalar -----------------


@njit(cache=True, nogil=True, inline="always")
def _vec(a: np.ndarray) -> tuple[float, ...]:
    return (a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9])


@njit(cache=True, nogil=True, inline="always")
def _add_row(s: tuple[float, ...], a: np.ndarray, j: int, x: float) -> tuple[float, ...]:
    """``s + a[j] * x``."""
    return (
        s[0] + a[j, 0] * x, s[1] + a[j, 1] * x, s[2] + a[j, 2] * x, s[3] + a[j, 3] * x,
        s[4] + a[j, 4] * x, s[5] + a[j, 5] * x, s[6] + a[j, 6] * x, s[7] + a[j, 7] * x,
        s[8] + a[j, 8] * x, s[9] + a[j, 9] * x,
    )  # fmt: skip


@njit(cache=True, nogil=True, inline="always")
def _sub_row(a: np.ndarray, j: int, d: tuple[float, ...], x: float) -> None:
    """``a[j] -= d * x`` in place."""
    a[j, 0] -= d[0] * x
    a[j, 1] -= d[1] * x
    a[j, 2] -= d[2] * x
    a[j, 3] -= d[3] * x
    a[j, 4] -= d[4] * x
    a[j, 5] -= d[5] * x
    a[j, 6] -= d[6] * x
    a[j, 7] -= d[7] * x
    a[j, 8] -= d[8] * x
    a[j, 9] -= d[9] * x


@njit(cache=True, nogil=True, inline="always")
def _sub_vec(a: np.ndarray, d: tuple[float, ...]) -> None:
    """``a -= d`` in place, for the 10 biases."""
    for k in range(N_CLASSES):
        a[k] -= d[k]


@njit(cache=True, nogil=True, inline="always")
def _axpy(s: tuple[float, ...], d: tuple[float, ...], c: float) -> tuple[float, ...]:
    """``s + c * d``."""
    return (
        s[0] + c * d[0], s[1] + c * d[1], s[2] + c * d[2], s[3] + c * d[3], s[4] + c * d[4],
        s[5] + c * d[5], s[6] + c * d[6], s[7] + c * d[7], s[8] + c * d[8], s[9] + c * d[9],
    )  # fmt: skip


@njit(cache=True, nogil=True, inline="always")
def _scaled_error(out: tuple[float, ...], label: int, rate: float) -> tuple[float, ...]:
    """``rate * (out - onehot(label))``."""
    return (
        rate * (out[0] - (label == 0)), rate * (out[1] - (label == 1)), rate * (out[2] - (label == 2)),
        rate * (out[3] - (label == 3)), rate * (out[4] - (label == 4)), rate * (out[5] - (label == 5)),
        rate * (out[6] - (label == 6)), rate * (out[7] - (label == 7)), rate * (out[8] - (label == 8)),
        rate * (out[9] - (label == 9)),
    )  # fmt: skip


@njit(cache=True, nogil=True, inline="always")
def _argmax(v: tuple[float, ...]) -> int:
    """Index of the first maximum."""
    best = 0
    top = v[0]
    for k in range(1, N_CLASSES):
        if v[k] > top:
            top = v[k]
            best = k
    return best


@njit(cache=True, nogil=True, inline="always")
def _softmax(s: tuple[float, ...]) -> tuple[float, ...]:
    top = s[_argmax(s)]
    e = (
        math.exp(s[0] - top), math.exp(s[1] - top), math.exp(s[2] - top), math.exp(s[3] - top),
        math.exp(s[4] - top), math.exp(s[5] - top), math.exp(s[6] - top), math.exp(s[7] - top),
        math.exp(s[8] - top), math.exp(s[9] - top),
    )  # fmt: skip
    total = e[0] + e[1] + e[2] + e[3] + e[4] + e[5] + e[6] + e[7] + e[8] + e[9]
    return (
        e[0] / total, e[1] / total, e[2] / total, e[3] / total, e[4] / total,
        e[5] / total, e[6] / total, e[7] / total, e[8] / total, e[9] / total,
    )  # fmt: skip


# -- compilation ---------------------------------------------------------------------------

_compile_lock = threading.Lock()
_compiled = False


@contextmanager
def _slp_vectoriser() -> Iterator[None]:
    """Turn on LLVM's SLP vectoriser (off by default in numba) for the compiles in this block.

    It fuses the written-out 10-wide row operations above into SIMD instructions: about 3x
    faster per-sample updates. numba reads this setting for each compile, so it is restored after.
    """
    config: Any = numba.config
    previous = config.SLP_VECTORIZE
    config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        config.SLP_VECTORIZE = previous


def ensure_compiled() -> None:
    """Compile the kernels for the array types the learner passes (or load numba's cache).

    Done once per process, explicitly, so that the vectoriser setting applies to the compile
    rather than to whichever call happens to come first.
    """
    global _compiled
    with _compile_lock:
        if _compiled:
            return
        writable = np.zeros((1, N_PIXELS), dtype=np.uint8)
        readonly = writable.copy()
        readonly.flags.writeable = False  # e.g. np.frombuffer over bytes read from Redis
        wt = np.zeros((N_PIXELS, N_CLASSES))
        vec = np.zeros(N_CLASSES)
        with _slp_vectoriser():
            for images in (writable, readonly):
                learn_loop(
                    wt, vec, wt.copy(), vec.copy(), np.ones(1), images, images.view(np.uint64),
                    np.zeros(1, dtype=np.int64), np.zeros(256), SOFTMAX, True, True, 1.0, 0.1,
                    SCHEDULE_CONSTANT, 1.0, 1.0, 0, np.zeros(1, dtype=np.int8),
                )  # fmt: skip
                out = np.zeros((1, N_CLASSES))
                score_loop(wt, vec, images, images.view(np.uint64), np.zeros(256), True, out)
        _compiled = True
