"""Draws the example digit photos in examples/digits/ (run once; the PNGs are committed).

Dark ink on light paper, as a phone photo of a handwritten digit would be: a stroke-drawn digit
with a slightly uneven pen, a tilt and a grey paper tone, so the service's photo preprocessing
(inversion, background removal, cropping, centring) has real work to do.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent / "digits"
SIZE = 160

# Each digit as pen strokes in a unit box (x right, y down), drawn as polylines.
STROKES: dict[int, list[list[tuple[float, float]]]] = {
    0: [[(0.5 + 0.28 * math.cos(t * math.pi / 10), 0.5 + 0.4 * math.sin(t * math.pi / 10)) for t in range(21)]],
    1: [[(0.38, 0.22), (0.55, 0.1), (0.55, 0.9)]],
    2: [[(0.25, 0.3), (0.35, 0.14), (0.55, 0.1), (0.72, 0.2), (0.72, 0.38), (0.5, 0.6), (0.25, 0.88), (0.78, 0.88)]],
    3: [[(0.25, 0.15), (0.7, 0.12), (0.45, 0.45), (0.7, 0.55), (0.72, 0.78), (0.5, 0.9), (0.25, 0.82)]],
    4: [[(0.62, 0.9), (0.62, 0.1), (0.22, 0.62), (0.8, 0.62)]],
    5: [
        [(0.72, 0.12), (0.32, 0.12), (0.28, 0.45), (0.55, 0.42), (0.72, 0.58), (0.68, 0.82), (0.45, 0.9), (0.25, 0.82)],
    ],
    7: [[(0.22, 0.14), (0.78, 0.14), (0.45, 0.9)], [(0.38, 0.52), (0.66, 0.52)]],
    9: [
        [(0.7, 0.35), (0.6, 0.14), (0.42, 0.12), (0.28, 0.28), (0.34, 0.48), (0.55, 0.5), (0.7, 0.35), (0.62, 0.9)],
    ],
}


def draw(digit: int, seed: int) -> Image.Image:
    rng = random.Random(seed)
    paper = rng.randint(205, 235)
    image = Image.new("L", (SIZE, SIZE), paper)
    pen = ImageDraw.Draw(image)
    margin, scale = 28, SIZE - 56
    for stroke in STROKES[digit]:
        points = [(margin + scale * x + rng.uniform(-2, 2), margin + scale * y + rng.uniform(-2, 2)) for x, y in stroke]
        pen.line(points, fill=rng.randint(20, 60), width=rng.randint(9, 12), joint="curve")
    image = image.rotate(rng.uniform(-8, 8), resample=Image.Resampling.BICUBIC, fillcolor=paper)
    return image.filter(ImageFilter.GaussianBlur(1.2))


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for digit in STROKES:
        draw(digit, seed=digit).save(HERE / f"{digit}.png", optimize=True)


if __name__ == "__main__":
    main()
