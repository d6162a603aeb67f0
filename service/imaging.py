"""Uploaded PNG/JPEG -> an MNIST-like 28x28 input, made the way MNIST digits were made.

MNIST's recipe (LeCun et al.): the digit's ink, light on a dark background, is size-normalised
to fit a 20x20 box keeping its aspect ratio (anti-aliased, hence grey levels), then placed in a
28x28 field so that its centre of mass sits at the centre. Here, before that: grey levels,
light-on-dark orientation (a photo or a drawing of dark ink on paper is inverted), background
removal and contrast stretching, and a crop to the ink.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from digitstream.protocol import N_PIXELS

MAX_IMAGE_PIXELS = 40_000_000  # decoded size; a 40 MP photo is ~120 MB of RGB
FORMATS = ("PNG", "JPEG")
BOX = 20
FIELD = 28
CENTRE = 14.0  # MNIST's mean centre of mass, in pixel-index coordinates (measured: 14.00 +- 0.29)
NOISE_FLOOR = 0.1  # ink below 10 % of the strongest stroke is background (paper texture, JPEG ringing)
MIN_CONTRAST = 24.0  # grey levels between background and ink below which the image is blank


class ImageError(ValueError):
    """An upload that cannot become a digit; ``status_code`` is 413 for too large, else 422."""

    def __init__(self, detail: str, status_code: int = 422) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status_code = status_code


def to_mnist(data: bytes, field: str = "file") -> np.ndarray:
    """The (784,) uint8 MNIST-like input for an encoded PNG or JPEG image."""
    ink = ink_map(decode_grey(data, field), field)
    return centre_in_field(fit_in_box(crop_to_ink(ink))).reshape(N_PIXELS)


def decode_grey(data: bytes, field: str = "file") -> np.ndarray:
    """Grey levels (float32, 0 = black .. 255 = white) of a PNG/JPEG; transparency is flattened."""
    if not data:
        raise ImageError(f"{field}: empty upload, expected a PNG or JPEG image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in FORMATS:
                raise ImageError(f"{field}: {image.format} images are not accepted, only PNG and JPEG")
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageError(f"{field}: image too large ({width}x{height} pixels, limit {MAX_IMAGE_PIXELS:,})", 413)
            image.load()
            return _grey(ImageOps.exif_transpose(image))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{field}: image too large (limit {MAX_IMAGE_PIXELS:,} pixels)", 413) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"{field}: not a readable PNG or JPEG image ({exc.__class__.__name__})") from None


def _grey(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return arr * (255.0 / top)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if not has_alpha:
        return np.asarray(image.convert("L"), dtype=np.float32)
    rgba = image.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
    grey = np.asarray(rgba.convert("L"), dtype=np.float32)
    if alpha.min() >= 1.0:
        return grey
    # Strokes on a transparent canvas: put them on the background that contrasts with them.
    opaque = alpha > 0.5
    stroke = float(grey[opaque].mean()) if opaque.any() else 0.0
    background = 255.0 if stroke < 128 else 0.0
    return alpha * grey + (1.0 - alpha) * background


def ink_map(grey: np.ndarray, field: str = "file") -> np.ndarray:
    """Ink in 0..1, light-on-dark: inverted when the background (the border's median) is light."""
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    background = float(np.median(border))
    ink = background - grey if background > 127.5 else grey - background
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        raise ImageError(f"{field}: no digit found: the image is blank (contrast {peak:.0f} grey levels)")
    ink = np.clip(ink / peak, 0.0, 1.0)
    ink[ink < NOISE_FLOOR] = 0.0
    return ink


def crop_to_ink(ink: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def fit_in_box(ink: np.ndarray, box: int = BOX) -> np.ndarray:
    """Resize (anti-aliased) so the longer side is ``box`` pixels, keeping the aspect ratio."""
    height, width = ink.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(ink.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    out = np.clip(np.asarray(resized, dtype=np.float64), 0.0, None)
    peak = out.max()
    return out / peak if peak > 0 else out


def centre_in_field(ink: np.ndarray, field: int = FIELD) -> np.ndarray:
    """Place ``ink`` in a ``field`` x ``field`` image with its centre of mass at MNIST's centre; uint8."""
    height, width = ink.shape
    mass = ink.sum()
    rows, cols = np.arange(height), np.arange(width)
    com_row = float((ink.sum(axis=1) * rows).sum() / mass)
    com_col = float((ink.sum(axis=0) * cols).sum() / mass)
    top = min(max(round(CENTRE - com_row), 0), field - height)
    left = min(max(round(CENTRE - com_col), 0), field - width)
    out = np.zeros((field, field), dtype=np.uint8)
    out[top : top + height, left : left + width] = np.round(ink * 255.0).astype(np.uint8)
    return out
