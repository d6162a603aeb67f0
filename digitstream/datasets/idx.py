"""Reading and writing MNIST's IDX files (gzipped or raw) as numpy arrays."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

Split = Literal["train", "test"]

IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801
IMAGE_SIDE = 28
PIXELS = IMAGE_SIDE * IMAGE_SIDE
NUM_CLASSES = 10

#: Environment variable naming a directory that holds the four MNIST files (read by ``locate``).
DATA_ENV_VAR = "DIGITSTREAM_DATA_DIR"

_GZIP_MAGIC = b"\x1f\x8b"
_IMAGE_HEADER = struct.Struct(">IIII")
_LABEL_HEADER = struct.Struct(">II")
_SPLIT_PREFIX: dict[str, str] = {"train": "train", "test": "t10k"}

#: Base names of the four files of an MNIST directory; each may also carry a ``.gz`` suffix.
MNIST_FILE_STEMS: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DatasetError(Exception):
    """A data file is missing, unreadable or malformed; the message says what to do about it."""


@dataclass(frozen=True)
class Mnist:
    """Images (n, 784) uint8 row-major and their labels (n,) uint8, one row per sample."""

    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.uint8]

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise DatasetError(
                f"{len(self.images)} images but {len(self.labels)} labels: every image needs exactly one label."
            )

    def __len__(self) -> int:
        return len(self.labels)


def read_idx_images(path: str | os.PathLike[str]) -> npt.NDArray[np.uint8]:
    """Read an IDX3 image file into a writable (n, 784) uint8 array, checking its header and length."""
    path = Path(path)
    data = _read_payload(path)
    _magic, count, rows, cols = _unpack_header(path, data, _IMAGE_HEADER, IMAGE_MAGIC, "image")
    if (rows, cols) != (IMAGE_SIDE, IMAGE_SIDE):
        raise DatasetError(
            f"{path}: images are {rows}x{cols} pixels, expected {IMAGE_SIDE}x{IMAGE_SIDE}; "
            "this is not an MNIST image file."
        )
    pixels = _payload_array(path, data, _IMAGE_HEADER.size, count * PIXELS, f"{count} images")
    return pixels.reshape(count, PIXELS)


def read_idx_labels(path: str | os.PathLike[str]) -> npt.NDArray[np.uint8]:
    """Read an IDX1 label file into a writable (n,) uint8 array of digits 0..9."""
    path = Path(path)
    data = _read_payload(path)
    _magic, count = _unpack_header(path, data, _LABEL_HEADER, LABEL_MAGIC, "label")
    labels = _payload_array(path, data, _LABEL_HEADER.size, count, f"{count} labels")
    _check_label_range(path, labels)
    return labels


def write_idx_images(path: str | os.PathLike[str], images: npt.ArrayLike) -> None:
    """Write (n, 784) or (n, 28, 28) pixels 0..255 as an IDX3 file, gzipped if the name ends in .gz."""
    pixels = _as_uint8(images, "images")
    if pixels.ndim == 3 and pixels.shape[1:] == (IMAGE_SIDE, IMAGE_SIDE):
        pixels = pixels.reshape(len(pixels), PIXELS)
    if pixels.ndim != 2 or pixels.shape[1] != PIXELS:
        raise ValueError(f"images must have shape (n, {PIXELS}) or (n, 28, 28), got {pixels.shape}")
    header = _IMAGE_HEADER.pack(IMAGE_MAGIC, len(pixels), IMAGE_SIDE, IMAGE_SIDE)
    _write_atomically(Path(path), header + pixels.tobytes())


def write_idx_labels(path: str | os.PathLike[str], labels: npt.ArrayLike) -> None:
    """Write labels 0..9 as an IDX1 file, gzipped if the name ends in .gz."""
    digits = _as_uint8(labels, "labels")
    if digits.ndim != 1:
        raise ValueError(f"labels must have shape (n,), got {digits.shape}")
    if digits.size and int(digits.max()) >= NUM_CLASSES:
        raise ValueError(f"labels must be digits 0..9, got {int(digits.max())}")
    _write_atomically(Path(path), _LABEL_HEADER.pack(LABEL_MAGIC, len(digits)) + digits.tobytes())


def load_mnist(directory: str | os.PathLike[str], split: Split) -> Mnist:
    """Load one split ("train" or "test") from a directory holding the standard MNIST file names."""
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = Path(directory)
    prefix = _SPLIT_PREFIX[split]
    images_path = find_idx_file(directory, f"{prefix}-images-idx3-ubyte")
    labels_path = find_idx_file(directory, f"{prefix}-labels-idx1-ubyte")
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path)
    if len(images) != len(labels):
        raise DatasetError(
            f"{images_path.name} holds {len(images)} images but {labels_path.name} holds {len(labels)} "
            f"labels (in {directory}); the two files come from different data sets. "
            "Replace both with a matching pair (e.g. re-download them)."
        )
    return Mnist(images=images, labels=labels)


def find_idx_file(directory: Path, stem: str) -> Path:
    """Return ``<stem>.gz`` or ``<stem>`` in the directory, preferring the gzipped one."""
    candidates = _candidate_names(stem)
    for name in candidates:
        if (directory / name).is_file():
            return directory / name
    where = f"in {directory}" if directory.is_dir() else f"because the directory {directory} does not exist"
    raise DatasetError(
        f"MNIST file not found {where}: looked for {' or '.join(candidates)}. "
        "Put the file there (gzipped or not) or point to the directory that holds it."
    )


def missing_mnist_files(directory: Path, stems: Sequence[str] = MNIST_FILE_STEMS) -> list[str]:
    """Names of the MNIST files absent from the directory (in neither gz nor raw form)."""
    return [stem + ".gz" for stem in stems if not any((directory / n).is_file() for n in _candidate_names(stem))]


def _candidate_names(stem: str) -> tuple[str, str]:
    return (stem + ".gz", stem)


def _read_payload(path: Path) -> bytes:
    """The file's bytes, gunzipped when they start with the gzip magic (whatever the name says)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found. Check the path or re-download the data.") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read file ({exc}). Check its permissions.") from exc
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(
            f"{path}: corrupt or truncated gzip data ({exc}). Delete the file and download it again."
        ) from exc


def _unpack_header(path: Path, data: bytes, header: struct.Struct, magic: int, kind: str) -> tuple[int, ...]:
    """The header fields, after checking the magic number first (the likeliest mix-up)."""
    found = int.from_bytes(data[:4], "big")
    if len(data) >= 4 and found != magic:
        raise DatasetError(
            f"{path}: not an IDX {kind} file: magic number 0x{found:08x}, expected 0x{magic:08x}. "
            "Check that images and labels are not swapped and that the file is not corrupt."
        )
    if len(data) < header.size:
        raise DatasetError(
            f"{path}: truncated IDX {kind} file: expected at least a {header.size}-byte header, "
            f"got {len(data)} bytes. Delete the file and download it again."
        )
    return tuple(header.unpack_from(data))


def _payload_array(path: Path, data: bytes, offset: int, count: int, what: str) -> npt.NDArray[np.uint8]:
    """The ``count`` bytes after the header as a writable uint8 array; any other length is an error."""
    expected, actual = offset + count, len(data)
    if actual < expected:
        raise DatasetError(
            f"{path}: truncated file: its header announces {what}, which needs {expected} bytes "
            f"(uncompressed), but it holds only {actual}. Delete the file and download it again."
        )
    if actual > expected:
        raise DatasetError(
            f"{path}: {actual - expected} unexpected bytes after the {what} its header announces "
            f"(expected {expected} bytes, found {actual}). The header count is wrong; re-create the file."
        )
    return np.frombuffer(data, dtype=np.uint8, count=count, offset=offset).copy()


def _check_label_range(path: Path, labels: npt.NDArray[np.uint8]) -> None:
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        first = int(bad[0])
        raise DatasetError(
            f"{path}: {bad.size} labels are outside 0..9 (first at index {first}: {int(labels[first])}). "
            "This is not an MNIST label file, or it is corrupt."
        )


def _as_uint8(values: npt.ArrayLike, what: str) -> npt.NDArray[np.uint8]:
    array = np.asarray(values)
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "iu" or (array.size and (array.min() < 0 or array.max() > 255)):
        raise ValueError(f"{what} must be integers 0..255 (got dtype {array.dtype})")
    return array.astype(np.uint8)


def _write_atomically(path: Path, payload: bytes) -> None:
    """Write via a temporary file and os.replace, so a crash never leaves a half-written file."""
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
