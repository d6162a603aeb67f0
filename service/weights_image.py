"""The 10 weight templates drawn as 28x28 tiles: a linear model's weights look like the digits it learned."""

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


@functools.lru_cache(maxsize=8)
def weights_png(model: ServedModel, scale: int) -> bytes:
    """PNG of the served weights: one tile per digit 0..9, each scaled to its own largest |weight|."""
    weights = model.scorer.templates()[0]  # (784, 10), pixel-major
    tiles = []
    for digit in range(weights.shape[1]):
        template = weights[:, digit].reshape(28, 28)
        peak = float(np.abs(template).max()) or 1.0
        v = (template / peak)[..., None]
        colour = WHITE + np.clip(v, 0, None) * (POSITIVE - WHITE) + np.clip(-v, 0, None) * (NEGATIVE - WHITE)
        tiles.append(colour)
        tiles.append(np.full((28, GAP, 3), 235.0))
    strip = np.concatenate(tiles[:-1], axis=1).round().astype(np.uint8)
    image = Image.fromarray(strip)
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
