"""The mlp rule's arrays and their initial values from ``init_seed`` (numpy only, the same on every machine).

The random numbers come from SplitMix64 written out here rather than from ``numpy.random``, whose
streams may change between numpy versions: a model must be reproducible from its configuration
and its stream, whatever was installed when it started.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .params import HyperParameters

N_CLASSES = 10
N_PIXELS = 784

# name -> shape as a function of the hidden size; the served (averaged) copies follow the learned ones.
LEARNED = ("w1", "b1", "w2", "b2")
SERVED = ("avg_w1", "avg_b1", "avg_w2", "avg_b2")
ARRAY_NAMES = (*LEARNED, *SERVED, "norm")

_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_MASK = (1 << 64) - 1


def shapes(hidden: int) -> dict[str, tuple[int, ...]]:
    """Shape of every state array of an mlp with ``hidden`` units."""
    learned = {"w1": (N_PIXELS, hidden), "b1": (hidden,), "w2": (hidden, N_CLASSES), "b2": (N_CLASSES,)}
    served = {f"avg_{name}": shape for name, shape in learned.items()}
    return {**learned, **served, "norm": (1,)}


def dtype_of(name: str) -> np.dtype[np.floating]:
    """float32 weights (see ``mlp_kernels`` for why), float64 for the averaging norm."""
    return np.dtype(np.float64) if name == "norm" else np.dtype(np.float32)


def splitmix64(seed: int, count: int) -> np.ndarray:
    """The first ``count`` outputs of SplitMix64 started from ``seed``, as uint64."""
    with np.errstate(over="ignore"):  # the arithmetic is modulo 2**64 by design
        z = (np.arange(1, count + 1, dtype=np.uint64) * np.uint64(_GOLDEN)) + np.uint64(seed & _MASK)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
        return z ^ (z >> np.uint64(31))


def uniform(seed: int, stream: int, shape: tuple[int, ...], bound: float) -> np.ndarray:
    """Uniform float32 numbers in [-bound, bound) from (seed, stream): one independent sequence per stream."""
    start = int(splitmix64(seed * 0x100 + stream, 1)[0])  # decorrelate the streams of one seed
    bits = splitmix64(start, math.prod(shape)) >> np.uint64(11)  # 53 random bits
    unit = bits.astype(np.float64) * 2.0**-53
    return ((2.0 * unit - 1.0) * bound).reshape(shape).astype(np.float32)


def initial_arrays(params: HyperParameters) -> dict[str, np.ndarray]:
    """A new mlp's state: He-uniform weights from the seed, zero biases, served copies equal to them.

    He initialisation keeps the ReLU layer's activations at a useful scale (measured against
    Glorot's on the training stream: equal or slightly better, docs/mlp.md).
    """
    hidden = params.hidden
    w2 = uniform(params.init_seed, 2, (hidden, N_CLASSES), math.sqrt(6.0 / hidden))
    learned = {
        "w1": initial_w1(params.init_seed, hidden).copy(),
        "b1": np.zeros(hidden, np.float32),
        "w2": w2,
        "b2": np.zeros(N_CLASSES, np.float32),
    }
    served = {f"avg_{name}": array.copy() for name, array in learned.items()}
    return {**learned, **served, "norm": np.zeros(1, np.float64)}


@functools.lru_cache(maxsize=2)
def initial_w1(init_seed: int, hidden: int) -> np.ndarray:
    """The first layer's initial weights (read-only; cached: the pictures of every snapshot subtract them)."""
    w1 = uniform(init_seed, 1, (N_PIXELS, hidden), math.sqrt(6.0 / N_PIXELS))
    w1.flags.writeable = False
    return w1


def check_arrays(arrays: dict[str, np.ndarray], hidden: int) -> dict[str, np.ndarray]:
    """The state arrays with their expected shapes and dtypes; ValueError naming the first that is not."""
    checked = {}
    for name, shape in shapes(hidden).items():
        array = arrays.get(name)
        if array is None or array.shape != shape:
            raise ValueError(f"state array {name!r} missing or of wrong shape")
        if array.dtype != dtype_of(name):
            raise ValueError(f"state array {name!r} must be {dtype_of(name)}, got {array.dtype}")
        checked[name] = array
    return checked
