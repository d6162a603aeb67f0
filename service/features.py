"""The mlp's hidden units, for pictures: which ones matter most, what they detect, which digit each votes for."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import orjson

from .model_holder import ServedModel
from .weights_image import grid_png

MAX_UNITS = 64  # bounds the answer (~3 kB of JSON per unit)
LEVELS = 127  # each unit's 784 weights are sent as integers -127..127 of its own peak


def ranked_units(model: ServedModel, count: int) -> list[int]:
    """The ``count`` units with the largest ``|learned input weights| * |output weights|``, largest first."""
    features = model.scorer.features()
    if features is None:
        return []
    learned, w2 = features
    importance = np.linalg.norm(learned, axis=0) * np.linalg.norm(w2, axis=1)
    order = np.lexsort((np.arange(len(importance)), -importance))  # ties: lower unit first
    return [int(u) for u in order[:count]]


@functools.lru_cache(maxsize=8)
def features_json(model: ServedModel, count: int) -> bytes:
    """The GET /model/features body for ``count`` units, encoded once per served model and count."""
    features = model.scorer.features()
    units: list[dict[str, Any]] = []
    if features is not None:
        learned, w2 = features
        for u in ranked_units(model, count):
            column = learned[:, u].astype(np.float64)
            peak = float(np.abs(column).max())
            levels = np.round(column / peak * LEVELS).astype(np.int64) if peak > 0 else np.zeros(784, np.int64)
            output = w2[u].astype(np.float64)
            units.append({
                "unit": u,
                "importance": float(np.linalg.norm(column) * np.linalg.norm(output)),
                "votes_for": int(np.argmax(output)),
                "votes_against": int(np.argmin(output)),
                "output": output,
                "peak": peak,
                "input": levels,
            })  # fmt: skip
    body = {
        "version": model.version,
        "samples_learned": model.samples_learned,
        "rule": model.rule,
        "hidden": model.scorer.params.hidden,
        "units": units,
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


@functools.lru_cache(maxsize=8)
def features_png(model: ServedModel, count: int, scale: int) -> bytes:
    """The ``count`` most important units' learned input weights as 28x28 tiles, 12 to a row."""
    features = model.scorer.features()
    if features is None:
        return grid_png([], columns=12, scale=scale)
    learned = features[0]
    return grid_png([learned[:, u] for u in ranked_units(model, count)], columns=12, scale=scale)
