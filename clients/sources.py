"""Reading labelled samples from files: an MNIST IDX directory, an .npz, a CSV, or a folder of images.

Every reader returns a :class:`SampleSet` whose pixel values are left as found (e.g. a CSV's 300 stays
300): judging samples is the publisher's job, so the same rules and reasons apply whatever the
source. Files that cannot be read at all raise :class:`SourceError`, whose message names the file
and what is wrong with it; single samples that cannot be read (a CSV row with 700 values, a broken
PNG) are kept in ``SampleSet.unreadable`` with their reason, and the rest is still usable.
"""

from __future__ import annotations

import gzip
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from digitstream.datasets import DatasetError, load_mnist
from digitstream.datasets.idx import MNIST_FILE_STEMS

__all__ = [
    "IMAGE_SUFFIXES",
    "SampleSet",
    "SourceError",
    "epochs",
    "image_pixels",
    "load_image",
    "load_samples",
    "open_image",
    "read_csv",
    "read_idx_dir",
    "read_image_folder",
    "read_npz",
]

Split = Literal["train", "test"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_SIDE = 28
_PIXELS = _SIDE * _SIDE
_NPZ_IMAGE_KEYS = ("images", "x_train", "x", "X")
_NPZ_LABEL_KEYS = ("labels", "y_train", "y", "Y")


class SourceError(Exception):
    """A source that cannot be read at all; the message names the file and the problem."""


@dataclass
class SampleSet:
    """Samples of one source, in file order, before validation."""

    images: np.ndarray  # (n, 784), any numeric dtype, values as found
    labels: np.ndarray  # (n,), as found
    description: str
    locate: Callable[[int], str]  # where sample i comes from, for messages
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (where, reason), never sent
    bulk: bool = True  # an archive (IDX, npz, CSV) rather than images drawn one by one: packed by default

    def __len__(self) -> int:
        return len(self.labels)


def load_samples(path: Path, *, split: Split = "train") -> SampleSet:
    """Read any supported source, chosen by what ``path`` is (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        if _has_idx_files(path):
            return read_idx_dir(path, split)
        if any(child.is_dir() and _digit_folder(child.name) is not None for child in path.iterdir()):
            return read_image_folder(path)
        raise SourceError(
            f"{path}: neither MNIST IDX files ({', '.join(MNIST_FILE_STEMS[:2])}, gzipped or not) nor "
            "sub-folders named 0..9 holding images; point to one of those"
        )
    name = path.name.lower()
    if name.endswith(".npz"):
        return read_npz(path)
    if name.endswith((".csv", ".csv.gz")):
        return read_csv(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    raise SourceError(
        f"{path}: unknown source type; expected a directory (MNIST IDX files, or image sub-folders named 0..9), "
        "an .npz file or a .csv file"
    )


def read_idx_dir(directory: Path, split: Split = "train") -> SampleSet:
    """One split of a directory holding the standard MNIST IDX files (gzipped or raw)."""
    try:
        data = load_mnist(directory, split)
    except DatasetError as exc:
        raise SourceError(str(exc)) from None
    return SampleSet(data.images, data.labels, f"MNIST {split} split in {directory}", lambda i: f"{split} #{i}")


def read_npz(path: Path) -> SampleSet:
    """Arrays ``images`` (or ``x_train``) and ``labels`` (or ``y_train``) of an .npz; never unpickles."""
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise SourceError(f"{path}: not a readable .npz file ({exc})") from None
    with archive:
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise SourceError(f"{path}: holds a single array, not an .npz archive of images and labels")
        image_key = next((k for k in _NPZ_IMAGE_KEYS if k in archive.files), None)
        label_key = next((k for k in _NPZ_LABEL_KEYS if k in archive.files), None)
        if image_key is None or label_key is None:
            raise SourceError(
                f"{path}: expected arrays 'images' and 'labels' (or 'x_train' and 'y_train'), "
                f"found {sorted(archive.files) or 'none'}"
            )
        try:
            images, labels = archive[image_key], archive[label_key]
        except ValueError as exc:  # object arrays need pickle, which we refuse
            raise SourceError(f"{path}: cannot read its arrays without pickle ({exc}); store plain numbers") from None
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            raise SourceError(f"{path}: corrupt array data ({exc})") from None
    if images.ndim == 3 and images.shape[1:] == (_SIDE, _SIDE):
        images = images.reshape(len(images), _PIXELS)
    if images.ndim != 2 or images.shape[1] != _PIXELS or images.dtype.kind not in "iubf":
        raise SourceError(
            f"{path}: '{image_key}' must be numbers of shape (n, 784) or (n, 28, 28), "
            f"got {images.dtype} {list(images.shape)}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise SourceError(
            f"{path}: '{label_key}' must hold one label per image ({len(images)}), got shape {list(labels.shape)}"
        )
    return SampleSet(images, labels, f"{path} ({len(labels)} samples)", lambda i: f"{path.name}[{i}]")


def read_csv(path: Path) -> SampleSet:
    """Rows of ``label, p0, ..., p783`` (an optional header line is skipped); ``.csv.gz`` is gunzipped."""
    lines = _read_lines(path)
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if numbered and not _is_integer(numbered[0][1].split(",", 1)[0]):
        numbered = numbered[1:]  # a header such as "label,pixel0,..."
    if not numbered:
        raise SourceError(f"{path}: no data rows (expected rows of a label then 784 pixel values)")
    try:
        table = np.loadtxt([line for _, line in numbered], delimiter=",", dtype=np.int64, ndmin=2)
        if table.shape[1] != 1 + _PIXELS:
            raise ValueError("wrong width")
        line_numbers = [n for n, _ in numbered]
        unreadable: list[tuple[str, str]] = []
    except (ValueError, OverflowError):
        table, line_numbers, unreadable = _parse_rows(path, numbered)
    return SampleSet(
        table[:, 1:],
        table[:, 0],
        f"{path} ({len(table)} rows)",
        lambda i: f"{path.name} line {line_numbers[i]}",
        unreadable,
    )


def read_image_folder(directory: Path) -> SampleSet:
    """Images in sub-folders named by their digit (``3/a.png`` is a 3), read as MNIST pixels."""
    rows: list[np.ndarray] = []
    labels: list[int] = []
    names: list[str] = []
    unreadable: list[tuple[str, str]] = []
    for child in sorted(directory.iterdir()):
        if child.name.startswith("."):
            continue
        digit = _digit_folder(child.name) if child.is_dir() else None
        if digit is None:
            what = "folder" if child.is_dir() else "file"
            unreadable.append((child.name, f"{what} skipped: the label must be a sub-folder named 0..9"))
            continue
        for file in sorted(child.iterdir()):
            if file.name.startswith(".") or file.is_dir():
                continue
            where = f"{child.name}/{file.name}"
            try:
                rows.append(load_image(file))
            except SourceError as exc:
                unreadable.append((where, str(exc).removeprefix(f"{file}: ")))
                continue
            labels.append(digit)
            names.append(where)
    if not rows:
        reason = f" ({unreadable[0][0]}: {unreadable[0][1]})" if unreadable else ""
        raise SourceError(f"{directory}: no readable images in sub-folders 0..9{reason}")
    images = np.stack(rows)
    return SampleSet(
        images,
        np.array(labels, dtype=np.int64),
        f"{directory} ({len(rows)} images)",
        names.__getitem__,
        unreadable,
        bulk=False,
    )


def load_image(path: Path) -> np.ndarray:
    """One image file as MNIST pixels: (784,) uint8, 28x28, 0 = background (see :func:`image_pixels`)."""
    with open_image(path) as image:
        return image_pixels(image, str(path))


def open_image(path: Path) -> Image.Image:
    """An image file, opened and fully decoded, or a SourceError naming the file and the problem."""
    path = Path(path)
    try:
        image = Image.open(path)
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SourceError(f"{path}: is a directory, not an image") from None
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise SourceError(f"{path}: not a readable image ({exc.__class__.__name__})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise SourceError(f"{path}: cannot open ({exc})") from None
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # truncated or corrupt data
        image.close()
        raise SourceError(f"{path}: corrupt image data ({exc})") from None
    return image


def image_pixels(image: Image.Image, name: str = "image") -> np.ndarray:
    """An image as MNIST pixels: grey, 28x28, light ink on a dark (0) background.

    28x28 images are used as they are; other square images are scaled down (or up) to 28x28;
    non-square images are refused, since stretching them would distort the digit. Dark ink on light
    paper (judged by the border) is inverted, and transparent areas count as background.
    """
    width, height = image.size
    if width != height:
        raise SourceError(
            f"{name}: image is {width}x{height} pixels; expected 28x28 (or a square image, which is scaled)"
        )
    grey = _grey(image)
    if grey.size != (_SIDE, _SIDE):
        grey = grey.resize((_SIDE, _SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.uint8)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if np.median(border) > 127:
        pixels = 255 - pixels
    return np.ascontiguousarray(pixels).reshape(_PIXELS)


def epochs(
    n: int, *, offset: int = 0, limit: int | None = None, repeat: int = 1, shuffle: int | None = None
) -> Iterator[np.ndarray]:
    """Sample indices of each pass: rows ``offset .. offset+limit`` of the source, ``repeat`` times.

    With ``shuffle`` (a seed), each pass is a new permutation of those rows, reproducible from the seed.
    """
    if offset < 0 or (limit is not None and limit < 0) or repeat < 0:
        raise ValueError("offset, limit and repeat must be >= 0")
    selected = np.arange(offset, n if limit is None else min(n, offset + limit))
    rng = np.random.default_rng(shuffle) if shuffle is not None else None
    for _ in range(repeat):
        yield rng.permutation(selected) if rng is not None else selected


def _grey(image: Image.Image) -> Image.Image:
    """Greyscale; transparency becomes background whatever the ink's colour."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float64) / 255.0
        grey = np.asarray(rgba.convert("L"), dtype=np.float64)
        opaque = alpha > 0.5
        dark_ink = bool(opaque.any()) and float(grey[opaque].mean()) < 128
        # Dark ink on a transparent sheet: the ink is wherever it is opaque. Light ink: fade it to black.
        values = alpha * 255.0 if dark_ink else grey * alpha
        return Image.fromarray(np.round(values).astype(np.uint8), "L")
    return image.convert("L")


def _has_idx_files(directory: Path) -> bool:
    return any((directory / stem).is_file() or (directory / f"{stem}.gz").is_file() for stem in MNIST_FILE_STEMS)


def _digit_folder(name: str) -> int | None:
    return int(name) if len(name) == 1 and name.isdigit() else None


def _read_lines(path: Path) -> list[str]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise SourceError(f"{path}: corrupt gzip data ({exc})") from None
    try:
        return raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise SourceError(f"{path}: not a text CSV file (not UTF-8)") from None


def _is_integer(text: str) -> bool:
    try:
        int(text.strip())
    except ValueError:
        return False
    return True


def _parse_rows(path: Path, numbered: Sequence[tuple[int, str]]) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Row by row, keeping the good rows and a reason for each bad one (the slow path)."""
    rows: list[np.ndarray] = []
    line_numbers: list[int] = []
    unreadable: list[tuple[str, str]] = []
    for number, line in numbered:
        where = f"{path.name} line {number}"
        fields = line.split(",")
        if len(fields) != 1 + _PIXELS:
            reason = f"expected {1 + _PIXELS} values (a label then {_PIXELS} pixels), got {len(fields)}"
            unreadable.append((where, reason))
            continue
        try:
            rows.append(np.array([int(value) for value in fields], dtype=np.int64))
        except ValueError:
            unreadable.append((where, "values must be whole numbers"))
            continue
        except OverflowError:
            unreadable.append((where, "values must be in 0..255 (found a huge number)"))
            continue
        line_numbers.append(number)
    table = np.stack(rows) if rows else np.zeros((0, 1 + _PIXELS), dtype=np.int64)
    return table, line_numbers, unreadable
