"""Weights drawn as 28x28 tiles: a linear model's weights, or an mlp's units, look like what they learned."""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image

from .model_holder import ServedModel

POSITIVE = np.array([16.0, 64.0, 160.0])  # blue: ink here votes for the digit
NEGATIVE = np.array([200.0, 32.0, 32.0])  # red: ink here votes against it
WHITE = np.array([255.0, 255.0, 255.0])
GAP = 2  # tile pixels between templates, before scaling
GAP_COLOUR = 235.0


@functools.lru_cache(maxsize=8)
def weights_png(model: ServedModel, scale: int) -> bytes:
    """PNG of the served templates: one tile per digit 0..9, each scaled to its own largest |weight|."""
    weights = model.scorer.templates()[0]  # (784, 10), pixel-major
    return grid_png([weights[:, digit] for digit in range(weights.shape[1])], columns=weights.shape[1], scale=scale)


def tile(values: np.ndarray) -> np.ndarray:
    """784 weights -> a 28x28 RGB tile (float), blue for positive and red for negative, scaled to the peak."""
    template = values.reshape(28, 28)
    peak = float(np.abs(template).max()) or 1.0
    v = (template / peak)[..., None]
    colour: np.ndarray = WHITE + np.clip(v, 0, None) * (POSITIVE - WHITE) + np.clip(-v, 0, None) * (NEGATIVE - WHITE)
    return colour


def grid_png(maps: list[np.ndarray], columns: int, scale: int) -> bytes:
    """Tiles of ``maps`` (784 weights each) in rows of ``columns``, ``GAP`` apart, enlarged ``scale`` x."""
    rows = []
    for start in range(0, max(len(maps), 1), columns):
        tiles = [tile(values) for values in maps[start : start + columns]]
        tiles += [np.full((28, 28, 3), 255.0)] * (columns - len(tiles))  # pad the last row
        parts: list[np.ndarray] = []
        for t in tiles:
            parts += [t, np.full((28, GAP, 3), GAP_COLOUR)]
        rows += [np.concatenate(parts[:-1], axis=1), np.full((GAP, 30 * columns - GAP, 3), GAP_COLOUR)]
    picture = np.concatenate(rows[:-1], axis=0).round().astype(np.uint8)
    image = Image.fromarray(picture)
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
