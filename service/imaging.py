"""Uploaded PNG/JPEG -> an MNIST-like 28x28 input, made the way MNIST digits were made.

MNIST's recipe (LeCun et al.): the digit's ink, light on a dark background, is size-normalised
to fit a 20x20 box keeping its aspect ratio (anti-aliased, hence grey levels), then placed in a
28x28 field so that its centre of mass sits at the centre. Here, before that: grey levels,
light-on-dark orientation (a photo or a drawing of dark ink on paper is inverted), background
removal and contrast stretching, and a crop to the ink.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageChops, UnidentifiedImageError

from digitstream.protocol import N_PIXELS

MAX_IMAGE_PIXELS = 4_000_000  # the default of Settings.max_image_pixels: a 2000x2000 picture
FORMATS = ("PNG", "JPEG")  # the only decoders Pillow may try (an MPO is a camera's JPEG: its first picture)
ACCEPTED = frozenset({"PNG", "JPEG", "MPO"})
WORK_PIXELS = 500_000  # the picture is shrunk to at most this many pixels before any float copy
PROGRESSIVE_SAMPLES = 8_000_000  # a 4-megapixel progressive JPEG in colour (4:2:0) holds 6 M
WORK_SIDE = 2048  # ... and to at most this many pixels on its longer side (a one-row picture)
ORIENTATION = 0x0112  # the EXIF tag of a camera's rotation
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


def to_mnist(data: bytes | bytearray, field: str = "file", max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """The (784,) uint8 MNIST-like input for an encoded PNG or JPEG image."""
    ink = ink_map(decode_grey(data, field, max_pixels), field)
    return centre_in_field(fit_in_box(crop_to_ink(ink))).reshape(N_PIXELS)


def decode_grey(data: bytes | bytearray, field: str = "file", max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Grey levels (float32, 0 = black .. 255 = white) of a PNG/JPEG, at most ``WORK_PIXELS``; alpha flattened.

    The cost is bounded before anything is decoded: only the PNG and JPEG decoders are tried, and
    an image whose header declares more than ``max_pixels`` is refused (413). A JPEG is decoded
    already shrunk (libjpeg's DCT scaling, through ``draft``); a PNG is shrunk by an integer
    factor (``reduce``, a box filter) right after decoding, in its own 8-bit mode. Only then is
    anything converted to float.
    """
    if not data:
        raise ImageError(f"{field}: empty upload, expected a PNG or JPEG image")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            if image.format not in ACCEPTED:
                raise ImageError(f"{field}: {image.format} images are not accepted, only PNG and JPEG")
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(f"{field}: image too large ({width}x{height} pixels, limit {max_pixels:,}): "
                                 "send a smaller picture of the digit", 413)  # fmt: skip
            if image.format != "PNG":
                _check_progressive(image, field)
                factor = _factor(width, height)
                image.draft("L" if image.mode in ("L", "RGB", "YCbCr") else image.mode,
                            (math.ceil(width / factor), math.ceil(height / factor)))  # fmt: skip
            image.load()
            orientation = image.getexif().get(ORIENTATION)
            levels, alpha = _shrink(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{field}: image too large (limit {max_pixels:,} pixels)", 413) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        if isinstance(exc, ImageError):
            raise
        other = _other_format(data)
        if other is not None:
            raise ImageError(f"{field}: {other} images are not accepted, only PNG and JPEG") from None
        raise ImageError(f"{field}: not a readable PNG or JPEG image ({exc.__class__.__name__})") from None
    grey = _grey(levels, alpha)
    return _orient(grey, orientation)


OTHER_FORMATS = (
    (b"GIF8", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"), (b"%!PS", "EPS"), (b"\xc5\xd0\xd3\xc6", "EPS"), (b"qoif", "QOI"),
    *((f"P{i}".encode(), "PNM") for i in range(1, 8)),
)  # fmt: skip


def _check_progressive(image: Image.Image, field: str) -> None:
    """A progressive JPEG holds every coefficient of every component while it decodes, however it is shrunk."""
    if not image.info.get("progressive"):
        return
    layers = getattr(image, "layer", None) or [(0, 1, 1, 0)]
    h_max = max(h for _, h, _, _ in layers)
    v_max = max(v for _, _, v, _ in layers)
    width, height = image.size
    samples = sum(math.ceil(width * h / h_max) * math.ceil(height * v / v_max) for _, h, v, _ in layers)
    if samples > PROGRESSIVE_SAMPLES:
        raise ImageError(
            f"{field}: a progressive JPEG of {width}x{height} pixels and {len(layers)} colour components holds "
            f"{samples:,} samples while it decodes, limit {PROGRESSIVE_SAMPLES:,}: send a baseline JPEG, "
            "a PNG or a smaller picture", 413,
        )  # fmt: skip


def _other_format(data: bytes | bytearray) -> str | None:
    """The name of a common image format the upload is in (for the message: it is never decoded)."""
    head = bytes(data[:16])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:12] in (b"ftypavif", b"ftypheic", b"ftypmif1"):
        return "AVIF/HEIF"
    return next((name for magic, name in OTHER_FORMATS if head.startswith(magic)), None)


def _orient(grey: np.ndarray, orientation: object) -> np.ndarray:
    """The picture as the camera's EXIF orientation tag says it was held (Pillow's ``exif_transpose``)."""
    turned = {
        2: lambda: grey[:, ::-1], 3: lambda: grey[::-1, ::-1], 4: lambda: grey[::-1], 5: lambda: grey.T,
        6: lambda: np.rot90(grey, -1), 7: lambda: grey.T[::-1, ::-1], 8: lambda: np.rot90(grey, 1),
    }.get(orientation if isinstance(orientation, int) else 0)  # fmt: skip
    if turned is None:
        return grey
    upright: np.ndarray = np.ascontiguousarray(turned())
    return upright


def _factor(width: int, height: int) -> int:
    """The integer shrink factor that brings ``width`` x ``height`` within ``WORK_PIXELS`` and ``WORK_SIDE``."""
    by_area = math.ceil(math.sqrt(width * height / WORK_PIXELS))
    return max(1, by_area, math.ceil(max(width, height) / WORK_SIDE))


def _shrink(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Grey levels (0..255) and opacity (0..1, None when opaque) of the decoded image, shrunk to ``WORK_PIXELS``.

    Everything at full size stays 8-bit (or 16/32-bit integers for 16-bit PNGs); the shrinking
    is a box filter, and with transparency it averages premultiplied grey (grey x alpha) as
    compositing requires.
    """
    mode = image.mode
    factor = _factor(*image.size)

    def small(im: Image.Image) -> Image.Image:
        return im.reduce(factor) if factor > 1 else im

    if mode.startswith("I;16") or mode == "I":
        levels = np.asarray(small(image.convert("I") if mode != "I" else image), dtype=np.float32)
        top = 65535.0 if mode.startswith("I;16") or levels.max() > 255 else 255.0  # "I" may hold 8 or 16 bits
        return levels * (255.0 / top), None
    if mode in ("P", "PA"):
        image = image.convert("RGBA" if mode == "PA" or "transparency" in image.info else "L")
        mode = image.mode
    if mode not in ("RGBA", "LA"):
        return np.asarray(small(image.convert("L")), dtype=np.float32), None
    alpha = image.getchannel("A")
    grey = image.convert("L")
    if factor == 1:
        return np.asarray(grey, dtype=np.float32), np.asarray(alpha, dtype=np.float32) / 255.0
    premultiplied = np.asarray(small(ImageChops.multiply(grey, alpha)), dtype=np.float32)
    opacity = np.asarray(small(alpha), dtype=np.float32) / 255.0
    levels = np.divide(premultiplied, opacity, out=np.zeros_like(premultiplied), where=opacity > 0)
    return levels, opacity


def _grey(levels: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Grey levels with transparency flattened onto the background that contrasts with the strokes."""
    if alpha is None or alpha.min() >= 1.0:
        return levels
    opaque = alpha > 0.5
    stroke = float(levels[opaque].mean()) if opaque.any() else 0.0
    background = 255.0 if stroke < 128 else 0.0
    flat: np.ndarray = alpha * levels + (1.0 - alpha) * background
    return flat


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
