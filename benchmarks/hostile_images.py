"""Small files that decode to huge images: the uploads an attacker would send to ``POST /predict/image``.

Each :class:`Upload` is a PNG or JPEG (every colour type, bit depth, interlacing, progressive
coding, CMYK...) whose pixels are mostly one flat colour, so that it compresses to a few kB or
MB while it declares up to ``pixels`` pixels; a dark stroke in the middle makes it a "digit", so
that a decoder that accepts it runs the whole pipeline. Also: formats the service does not
accept (GIF, BMP with RLE, TIFF of 32-bit or float pixels, WebP, 16-bit PGM), headers that
declare gigapixels, and compressed-text bombs. PNGs are written by hand (any bit depth and
colour type Pillow cannot save); JPEGs by Pillow. Used by the security tests (peak memory) and
``benchmarks/uploads.py`` (costs and latency).
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Upload:
    """One crafted file: ``name`` says what it is; ``accepted`` whether a service may decode it at all."""

    name: str
    data: bytes
    content_type: str
    width: int
    height: int
    accepted: bool = True  # a PNG/JPEG the service may decode (if small enough); False: refused whatever its size

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def describe(self) -> str:
        return f"{self.name} ({self.width}x{self.height}, {len(self.data):,} bytes)"


def square(pixels: int) -> tuple[int, int]:
    side = math.isqrt(pixels)
    return side, side


# -- PNG, by hand ------------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_samples(colour_type: int, depth: int, ink: np.ndarray) -> np.ndarray:
    """The samples of one row (uint8 or big-endian uint16 bytes per channel) for a boolean ink mask."""
    top = (1 << depth) - 1
    grey = np.where(ink, 0, top)
    channels = {
        0: [grey],
        2: [grey, grey, grey],
        3: [np.where(ink, 1, 0)],  # palette index 1 is the ink
        4: [np.full_like(grey, top), np.where(ink, top, 0)],  # white strokes on a transparent canvas
        6: [grey, grey, grey, np.where(ink, top, top // 2)],
    }[colour_type]
    stacked = np.stack(channels, axis=-1)
    if depth == 16:
        return stacked.astype(">u2").view(np.uint8).reshape(-1)
    if depth < 8:
        return np.packbits(np.unpackbits(stacked.astype(np.uint8).reshape(-1, 1), axis=1)[:, 8 - depth :].reshape(-1))
    return stacked.astype(np.uint8).reshape(-1)


def png(
    width: int, height: int, colour_type: int = 0, depth: int = 8, *, interlace: bool = False,
    transparency: bool = False, text_bomb: int = 0, truncate: bool = False, rows: int | None = None,
) -> bytes:  # fmt: skip
    """A PNG of ``width`` x ``height``: white, with a black vertical bar (a "1") in the middle.

    ``truncate``: only the first 2 % of the compressed data; ``rows``: only that many rows (a header
    that declares more than the file holds).
    """
    band_x = (width * 45 // 100, max(width * 55 // 100, width * 45 // 100 + 1))
    band_y = (height // 5, max(height * 4 // 5, height // 5 + 1))
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, int(interlace))
    chunks = [_chunk(b"IHDR", header)]
    if colour_type == 3:
        palette = bytes([255, 255, 255, 0, 0, 0]) + bytes(3 * 254)
        chunks.append(_chunk(b"PLTE", palette))
        if transparency:
            chunks.append(_chunk(b"tRNS", bytes([0, 255]) + bytes(254)))  # a full-length transparency table
    if text_bomb:
        chunks.append(_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(bytes(text_bomb), 9)))
    compressor = zlib.compressobj(9)
    parts: list[bytes] = []
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    cache: dict[tuple[int, int, bool], bytes] = {}
    for x0, y0, dx, dy in passes:
        xs = np.arange(x0, width, dx)
        if not len(xs):
            continue
        in_band = (xs >= band_x[0]) & (xs < band_x[1])
        for y in range(y0, height if rows is None else min(rows, height), dy):
            stroke = band_y[0] <= y < band_y[1]
            key = (x0, dx, stroke)
            row = cache.get(key)
            if row is None:
                row = b"\x00" + _png_samples(colour_type, depth, in_band & stroke).tobytes()
                cache[key] = row
            parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    data = b"".join(parts)
    if truncate:
        data = data[: max(16, len(data) // 50)]
    chunks.append(_chunk(b"IDAT", data))
    chunks.append(_chunk(b"IEND", b""))
    return PNG_SIGNATURE + b"".join(chunks)


# -- JPEG and other formats, by Pillow ---------------------------------------------------------------


def _canvas(mode: str, width: int, height: int) -> Image.Image:
    white = {"L": 255, "RGB": (255, 255, 255), "CMYK": (0, 0, 0, 0), "1": 1, "P": 0, "I": 65535, "F": 1.0}[mode]
    black = {"L": 0, "RGB": (0, 0, 0), "CMYK": (0, 0, 0, 255), "1": 0, "P": 1, "I": 0, "F": 0.0}[mode]
    image = Image.new(mode, (width, height), white)  # type: ignore[arg-type]
    box = (width * 45 // 100, height // 5, max(width * 55 // 100, width * 45 // 100 + 1), max(height * 4 // 5, 1))
    image.paste(black, box)  # type: ignore[arg-type]
    return image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def jpeg(mode: str, width: int, height: int, **options: object) -> bytes:
    return encode(_canvas(mode, width, height), "JPEG", quality=50, **options)


def jpeg_declaring(width: int, height: int) -> bytes:
    """A tiny JPEG whose frame header (SOF0) claims ``width`` x ``height``: the data is cut short."""
    small = jpeg("L", 16, 16)
    sof = small.index(b"\xff\xc0")
    patched = small[: sof + 5] + struct.pack(">HH", height, width) + small[sof + 9 :]
    return patched[: len(patched) - 8] + b"\xff\xd9"


# -- the catalogue -----------------------------------------------------------------------------------


def hostile_uploads(pixels: int, *, refused_formats: bool = True) -> Iterator[Upload]:
    """Every crafted upload of about ``pixels`` pixels (a little less: sides are rounded down)."""
    w, h = square(pixels)
    thin_w = min(pixels, 65_500)  # JPEG's dimensions stop at 65,535
    thin_h = max(1, pixels // thin_w)
    png_cases: list[tuple[str, dict[str, object]]] = [
        ("PNG 1-bit grey", {"colour_type": 0, "depth": 1}),
        ("PNG 8-bit grey (L)", {"colour_type": 0, "depth": 8}),
        ("PNG 16-bit grey (I;16)", {"colour_type": 0, "depth": 16}),
        ("PNG grey+alpha (LA)", {"colour_type": 4, "depth": 8}),
        ("PNG 16-bit grey+alpha", {"colour_type": 4, "depth": 16}),
        ("PNG palette (P)", {"colour_type": 3, "depth": 8}),
        ("PNG palette, 256 colours + tRNS (P -> RGBA)", {"colour_type": 3, "depth": 8, "transparency": True}),
        ("PNG RGB", {"colour_type": 2, "depth": 8}),
        ("PNG 16-bit RGB", {"colour_type": 2, "depth": 16}),
        ("PNG RGBA", {"colour_type": 6, "depth": 8}),
        ("PNG 16-bit RGBA", {"colour_type": 6, "depth": 16}),
        ("PNG RGBA interlaced (Adam7)", {"colour_type": 6, "depth": 8, "interlace": True}),
        ("PNG 16-bit grey interlaced", {"colour_type": 0, "depth": 16, "interlace": True}),
    ]
    for name, options in png_cases:
        yield Upload(name, png(w, h, **options), "image/png", w, h)  # type: ignore[arg-type]
    yield Upload("PNG RGBA, one row (thin)", png(pixels, 1, 6, 8), "image/png", pixels, 1)
    yield Upload("PNG truncated RGBA", png(w, h, 6, 8, truncate=True), "image/png", w, h)
    jpeg_cases: list[tuple[str, str, dict[str, object]]] = [
        ("JPEG grey (L)", "L", {}),
        ("JPEG RGB 4:2:0", "RGB", {}),
        ("JPEG RGB 4:4:4", "RGB", {"subsampling": 0}),
        ("JPEG CMYK", "CMYK", {}),
        ("JPEG progressive grey", "L", {"progressive": True}),
        ("JPEG progressive RGB 4:2:0", "RGB", {"progressive": True}),
        ("JPEG progressive RGB 4:4:4", "RGB", {"progressive": True, "subsampling": 0}),
        ("JPEG progressive CMYK", "CMYK", {"progressive": True}),
    ]
    for name, mode, options in jpeg_cases:
        yield Upload(name, jpeg(mode, w, h, **options), "image/jpeg", w, h)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the decoder must turn it
    yield Upload("JPEG RGB, EXIF rotated", jpeg("RGB", w, h, exif=exif.tobytes()), "image/jpeg", w, h)
    yield Upload("JPEG progressive grey, thin", jpeg("L", thin_w, thin_h, progressive=True), "image/jpeg",
                 thin_w, thin_h)  # fmt: skip
    if refused_formats:
        yield from _refused(w, h)


def _refused(w: int, h: int) -> Iterator[Upload]:
    """Formats and headers no service should decode, whatever their size."""
    yield Upload("PNG declaring 100,000 x 100,000", png(100_000, 100_000, 0, 1, rows=16), "image/png",
                 100_000, 100_000, accepted=False)  # fmt: skip
    yield Upload("JPEG declaring 65,000 x 65,000", jpeg_declaring(65_000, 65_000), "image/jpeg", 65_000, 65_000,
                 accepted=False)  # fmt: skip
    yield Upload("PNG with a 64 MB zTXt text bomb", png(100, 100, text_bomb=64 << 20), "image/png", 100, 100,
                 accepted=False)  # fmt: skip
    yield Upload("GIF", encode(_canvas("P", w, h), "GIF"), "image/gif", w, h, accepted=False)
    yield Upload("BMP (8-bit RLE)", _bmp_rle(w, h), "image/bmp", w, h, accepted=False)
    yield Upload("TIFF 32-bit float (F)", encode(_canvas("F", 64, 64), "TIFF", compression="tiff_deflate"),
                 "image/tiff", 64, 64, accepted=False)  # fmt: skip
    yield Upload("TIFF 32-bit integer (I)", encode(_canvas("I", 64, 64), "TIFF", compression="tiff_deflate"),
                 "image/tiff", 64, 64, accepted=False)  # fmt: skip
    yield Upload("WebP", encode(_canvas("RGB", 2000, 2000), "WEBP", quality=10), "image/webp", 2000, 2000,
                 accepted=False)  # fmt: skip
    pgm = f"P5 {w} {h} 65535\n".encode() + bytes(64)  # 16-bit PGM header, data cut short
    yield Upload("PGM 16-bit (declared)", pgm, "image/x-portable-graymap", w, h, accepted=False)


def _bmp_rle(width: int, height: int) -> bytes:
    """An 8-bit RLE BMP: each row is runs of 255 pixels (2 bytes each), ``width`` x ``height`` from a few kB."""
    row = bytearray()
    left = width
    while left:
        run = min(255, left)
        row += bytes([run, 0])
        left -= run
    row += b"\x00\x00"  # end of line
    pixels = bytes(row) * min(height, 64) + b"\x00\x01"  # the first rows, then end of bitmap (the rest is 0)
    palette = bytes([255, 255, 255, 0, 0, 0, 0, 0]) + bytes(4 * 254)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    offset = 14 + len(info) + len(palette)
    head = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return head + info + palette + pixels
