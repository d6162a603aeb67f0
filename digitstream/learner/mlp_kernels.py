"""Compiled per-sample loop of the ``mlp`` rule (numba): one ReLU hidden layer, softmax output.

Layout, chosen for the per-sample cost: the first layer is stored pixel-major, ``w1[j, u]`` for
pixel ``j`` and hidden unit ``u`` (784 x H), so the H weights of one pixel are contiguous. A sample
touches only the rows of its inked pixels (~19 % of them): the forward pass adds ``x_j * w1[j]``
to the hidden vector, the backward pass subtracts ``x_j * dh`` from the same rows, both contiguous
vector work. Skipping a blank pixel is exact (it adds and updates nothing). The second layer is
``w2[u, k]`` (H x 10), so the scores and its update use the same 10-wide register helpers as the
linear kernel. Everything is float32: float64 doubles the memory the rows stream through and
halves the SIMD width (measured ~44k against ~97k samples/s at H=256).

Every operation is elementwise or a sum in a fixed order, and numba is not given ``fastmath``: the
result is the same bit for bit whatever the batch boundaries, and on any x86-64 machine.

Averaging (optional): after every ``average_every``-th update the served copy moves towards the
current weights, ``a += (c / C) * (w - a)`` with ``c = t ** average_power`` and ``C`` the sum of
the ``c`` so far, i.e. the served weights are the ``c``-weighted mean of the iterates at
``t = K, 2K, ...``. A dense pass over the ~200k weights costs little once per K samples, where a
lazy exact average (as the linear kernel keeps) would double the sparse per-sample work.
Predictions, including the prequential one made before each update, come from the served copy.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numba import njit

from .kernels import (
    N_CLASSES,
    N_PIXELS,
    SCHEDULE_CONSTANT,
    _add_row,
    _argmax,
    _gather_ink,
    _power,
    _rate,
    _slp_vectoriser,
    _sub_row,
    _vec,
)


@njit(cache=True, nogil=True, error_model="numpy", boundscheck=False)
def learn_loop(
    w1: np.ndarray,  # (784, H) float32, updated in place
    b1: np.ndarray,  # (H,) float32
    w2: np.ndarray,  # (H, 10) float32
    b2: np.ndarray,  # (10,) float32
    a1: np.ndarray,  # served (averaged) copies of the four arrays above, same shapes
    ab1: np.ndarray,
    a2: np.ndarray,
    ab2: np.ndarray,
    norm: np.ndarray,  # (1,) float64: C, the summed averaging weights (0: nothing averaged yet)
    images: np.ndarray,  # (n, 784) uint8, C-contiguous
    words: np.ndarray,  # the same memory as (n, 98) uint64
    labels: np.ndarray,  # (n,) int64 0..9
    scale: np.ndarray,  # (256,) float32: pixel value -> input value
    eta0: float,
    schedule: int,
    decay: float,
    power: float,
    averaging: bool,
    average_power: float,
    average_every: int,
    t0: int,
    predictions: np.ndarray,  # (n,) int8, out: the served model's prediction before each update
) -> None:
    """Predict then learn each sample in order; ``t0`` is the number of updates already made."""
    hidden = w1.shape[1]
    nz = np.empty(N_PIXELS, dtype=np.int64)
    xs = np.empty(N_PIXELS, dtype=np.float32)
    h = np.empty(hidden, dtype=np.float32)
    hs = np.empty(hidden, dtype=np.float32)
    dh = np.empty(hidden, dtype=np.float32)
    for i in range(images.shape[0]):
        t = t0 + i
        m = _gather_ink(images, words, i, scale, nz, xs)
        _forward(w1, b1, nz, xs, m, h)
        scores = _scores(w2, b2, h)
        if averaging and norm[0] > 0.0:
            _forward(a1, ab1, nz, xs, m, hs)
            predictions[i] = _argmax(_scores(a2, ab2, hs))
        else:
            predictions[i] = _argmax(scores)
        d = _scaled_error(scores, labels[i], _rate(eta0, schedule, decay, power, float(t)))
        _backward(w1, b1, w2, b2, nz, xs, m, h, d, dh)
        if averaging and (t + 1) % average_every == 0:
            c = _power(t + 1.0, average_power)
            norm[0] += c
            f = np.float32(c / norm[0])
            for j in range(N_PIXELS):
                _move_towards(a1[j], w1[j], f)
            _move_towards(ab1, b1, f)
            for u in range(hidden):
                _move_towards(a2[u], w2[u], f)
            _move_towards(ab2, b2, f)


@njit(cache=True, nogil=True, error_model="numpy", boundscheck=False, inline="always")
def _backward(
    w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray, nz: np.ndarray, xs: np.ndarray, m: int,
    h: np.ndarray, d: tuple[float, ...], dh: np.ndarray,
) -> None:  # fmt: skip
    """One SGD step given the scaled output error ``d``; ``dh`` is scratch space."""
    hidden = h.shape[0]
    # Output layer: the hidden error uses w2 before its update (the gradient at this sample).
    for u in range(hidden):
        hu = h[u]
        if hu > 0.0:
            dh[u] = _dot_row(w2, u, d)
            _sub_row(w2, u, d, hu)
        else:
            dh[u] = 0.0  # a unit that is off passes no error back, and h[u] = 0 changes no w2
    for k in range(N_CLASSES):
        b2[k] -= d[k]
    for u in range(hidden):
        b1[u] -= dh[u]
    for q in range(m):
        row = w1[nz[q]]
        x = xs[q]
        for u in range(hidden):
            row[u] -= x * dh[u]


@njit(cache=True, nogil=True, error_model="numpy", boundscheck=False)
def score_loop(
    w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray,
    images: np.ndarray, words: np.ndarray, scale: np.ndarray, out: np.ndarray,
) -> None:  # fmt: skip
    """Scores (n, 10) of many images with fixed weights: the same arithmetic as ``learn_loop``."""
    hidden = w1.shape[1]
    nz = np.empty(N_PIXELS, dtype=np.int64)
    xs = np.empty(N_PIXELS, dtype=np.float32)
    h = np.empty(hidden, dtype=np.float32)
    for i in range(images.shape[0]):
        m = _gather_ink(images, words, i, scale, nz, xs)
        _forward(w1, b1, nz, xs, m, h)
        scores = _scores(w2, b2, h)
        for k in range(N_CLASSES):
            out[i, k] = scores[k]


@njit(cache=True, nogil=True, error_model="numpy", boundscheck=False, inline="always")
def _forward(w1: np.ndarray, b1: np.ndarray, nz: np.ndarray, xs: np.ndarray, m: int, h: np.ndarray) -> None:
    """``h = relu(b1 + sum_q xs[q] * w1[nz[q]])``, added in pixel order.

    Two rows per pass over ``h`` halve its loads and stores; ``(h + x0 r0) + x1 r1`` rounds exactly
    as two passes would.
    """
    hidden = h.shape[0]
    for u in range(hidden):
        h[u] = b1[u]
    q = 0
    while q + 1 < m:
        r0, r1 = w1[nz[q]], w1[nz[q + 1]]
        x0, x1 = xs[q], xs[q + 1]
        for u in range(hidden):
            h[u] = (h[u] + x0 * r0[u]) + x1 * r1[u]
        q += 2
    if q < m:
        r0, x0 = w1[nz[q]], xs[q]
        for u in range(hidden):
            h[u] = h[u] + x0 * r0[u]
    for u in range(hidden):
        h[u] = max(h[u], np.float32(0.0))


@njit(cache=True, nogil=True, error_model="numpy", boundscheck=False, inline="always")
def _scores(w2: np.ndarray, b2: np.ndarray, h: np.ndarray) -> tuple[float, ...]:
    """``b2 + sum_u h[u] * w2[u]`` (float32), added in unit order; units that are off add nothing."""
    s = _vec(b2)
    for u in range(h.shape[0]):
        if h[u] > 0.0:
            s = _add_row(s, w2, u, h[u])
    return s


@njit(cache=True, nogil=True, error_model="numpy", boundscheck=False, inline="always")
def _dot_row(a: np.ndarray, j: int, d: tuple[float, ...]) -> float:
    """``a[j] . d`` added in class order."""
    total = a[j, 0] * d[0]
    for k in range(1, N_CLASSES):
        total = total + a[j, k] * d[k]
    return total  # type: ignore[no-any-return]


@njit(cache=True, nogil=True, error_model="numpy", boundscheck=False, inline="always")
def _scaled_error(s: tuple[float, ...], label: int, rate: float) -> tuple[float, ...]:
    """``rate * (softmax(s) - onehot(label))`` as float32: the softmax in float64."""
    top = float(s[_argmax(s)])
    e = (
        math.exp(s[0] - top), math.exp(s[1] - top), math.exp(s[2] - top), math.exp(s[3] - top),
        math.exp(s[4] - top), math.exp(s[5] - top), math.exp(s[6] - top), math.exp(s[7] - top),
        math.exp(s[8] - top), math.exp(s[9] - top),
    )  # fmt: skip
    total = e[0] + e[1] + e[2] + e[3] + e[4] + e[5] + e[6] + e[7] + e[8] + e[9]
    r = rate / total
    f = np.float32
    return (  # type: ignore[return-value]
        f(r * e[0] - rate * (label == 0)), f(r * e[1] - rate * (label == 1)), f(r * e[2] - rate * (label == 2)),
        f(r * e[3] - rate * (label == 3)), f(r * e[4] - rate * (label == 4)), f(r * e[5] - rate * (label == 5)),
        f(r * e[6] - rate * (label == 6)), f(r * e[7] - rate * (label == 7)), f(r * e[8] - rate * (label == 8)),
        f(r * e[9] - rate * (label == 9)),
    )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy", boundscheck=False, inline="always")
def _move_towards(a: np.ndarray, w: np.ndarray, f: np.float32) -> None:
    """``a += f * (w - a)`` elementwise."""
    for i in range(a.shape[0]):
        a[i] = a[i] + f * (w[i] - a[i])


_compile_lock = threading.Lock()
_compiled = False


def ensure_compiled() -> None:
    """Compile (or load from numba's cache) for the array types the learner passes, with SLP on."""
    global _compiled
    with _compile_lock:
        if _compiled:
            return
        writable = np.zeros((1, N_PIXELS), dtype=np.uint8)
        readonly = writable.copy()
        readonly.flags.writeable = False  # e.g. np.frombuffer over bytes read from Redis
        hidden = 8
        w1, w2 = np.zeros((N_PIXELS, hidden), np.float32), np.zeros((hidden, N_CLASSES), np.float32)
        b1, b2 = np.zeros(hidden, np.float32), np.zeros(N_CLASSES, np.float32)
        scale = np.zeros(256, np.float32)
        with _slp_vectoriser():
            for images in (writable, readonly):
                learn_loop(
                    w1, b1, w2, b2, w1.copy(), b1.copy(), w2.copy(), b2.copy(), np.zeros(1),
                    images, images.view(np.uint64), np.zeros(1, np.int64), scale,
                    0.1, SCHEDULE_CONSTANT, 1.0, 1.0, True, 1.0, 1, 0, np.zeros(1, np.int8),
                )  # fmt: skip
                score_loop(w1, b1, w2, b2, images, images.view(np.uint64), scale, np.zeros((1, N_CLASSES)))
        _compiled = True
