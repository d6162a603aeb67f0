"""The model file: one learned model as a self-describing numpy ``.npz``, JSON metadata, no pickle.

The file is a zip of ``.npy`` entries, readable by ``numpy.load(path, allow_pickle=False)``: one per
array of the learner's state (and the rolling-accuracy window), and ``meta.npy``, the UTF-8 bytes
of a JSON object (uint8)::

    {"format": "digitstream-model", "format_version": 1, "model": "digitstream", "version": 12,
     "rule": "softmax", "params": {...hyper-parameters...}, "samples_learned": 60000,
     "created_at": 1.7e9, "exported_at": 1.7e9, "metrics": {...}, "learner": {...},
     "arrays": {"wt": {"dtype": "<f8", "shape": [784, 10]}, ...}, "sha256": "..."}

``sha256`` covers the metadata (canonical JSON without the checksum) and every array (name,
dtype, shape, bytes, in name order): :func:`checksum`.

Reading trusts nothing (:func:`read_model_file`): the file's size, the number of entries and each
entry's declared and actual decompressed size are bounded before anything is decompressed (a zip
bomb stops at the bound), each ``.npy`` header is parsed on its own (only the little-endian
numeric dtypes of snapshots, C order, a bounded element count, exactly its bytes: no object
array, so nothing to unpickle), the metadata must describe exactly the entries, the checksum must
match, and the arrays must be a learner state the service can serve (names, shapes, dtypes,
finite). Anything else raises :class:`ModelFileError` with a message saying what is wrong.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import math
import re
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .learner import HyperParameters, LearnerState, scorer_for
from .learner.mlp_init import check_arrays

FORMAT = "digitstream-model"
FORMAT_VERSION = 1
META_ENTRY = "meta.npy"
ROLLING_ARRAY = "rolling_correct"  # the rolling accuracy's 0/1 outcomes (the worker's snapshot array)
MAX_FILE_BYTES = 64 * 1024 * 1024  # the largest model (mlp, 4,096 hidden units) is ~26 MB uncompressed
MAX_ENTRY_BYTES = 16 * 1024 * 1024  # one array: what Redis takes as one value (proto-max-bulk-len)
MAX_TOTAL_BYTES = 128 * 1024 * 1024  # every entry decompressed
MAX_META_BYTES = 4 * 1024 * 1024
MAX_ENTRIES = 32
ARRAY_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
DTYPES = frozenset({"<f8", "<f4", "<i8", "|u1"})  # those of snapshots (digitstream.snapshot)
_CHUNK = 1024 * 1024
_LINEAR = {"wt": (784, 10), "bias": (10,), "acc_wt": (784, 10), "acc_bias": (10,), "norm": (1,)}


class ModelFileError(ValueError):
    """A model file that is not one, is damaged, or does not hold a usable model."""


@dataclass(frozen=True)
class ModelFile:
    """A model as the file holds it: its metadata (checksum included) and arrays."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def name(self) -> str:
        return str(self.meta["model"])

    @property
    def params(self) -> HyperParameters:
        return HyperParameters.from_json(self.meta["params"])

    def learner_state(self) -> LearnerState:
        arrays = {k: v for k, v in self.arrays.items() if k != ROLLING_ARRAY}
        return LearnerState(self.params, int(self.meta["samples_learned"]), arrays)


def describe(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    return {name: {"dtype": a.dtype.str, "shape": list(a.shape)} for name, a in sorted(arrays.items())}


def checksum(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the metadata (canonical JSON, without ``sha256``) and every array, in name order."""
    digest = hashlib.sha256()
    body = {k: v for k, v in meta.items() if k != "sha256"}
    digest.update(json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"\0{name}\0{array.dtype.str}\0{list(array.shape)}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def make_model_file(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> ModelFile:
    """A model file of ``arrays`` (little-endian, C order) and ``meta`` (format, arrays and checksum added)."""
    arrays = {name: np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")) for name, a in arrays.items()}
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta, "arrays": describe(arrays)}
    full["sha256"] = checksum(full, arrays)
    return ModelFile(full, arrays)


def write_model_file(model: ModelFile, out: io.BufferedIOBase | io.BytesIO) -> None:
    """Write ``model`` as an ``.npz`` (deflate) to the binary file ``out``."""
    meta = json.dumps(model.meta, allow_nan=False, separators=(",", ":")).encode()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in [("meta", np.frombuffer(meta, dtype=np.uint8)), *sorted(model.arrays.items())]:
            with archive.open(f"{name}.npy", "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, array, allow_pickle=False)


def model_file_bytes(model: ModelFile) -> bytes:
    buffer = io.BytesIO()
    write_model_file(model, buffer)
    return buffer.getvalue()


def read_model_file(data: bytes) -> ModelFile:
    """The model in ``data`` (a whole file), checked as the module docstring says; ModelFileError if not."""
    if len(data) > MAX_FILE_BYTES:
        raise ModelFileError(f"the file is {len(data):,} bytes; a model file is at most {MAX_FILE_BYTES:,}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = _read_entries(archive)
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError,
            NotImplementedError, RuntimeError) as exc:  # fmt: skip
        raise ModelFileError(f"not a readable .npz (zip) file, or a damaged one: {exc}") from None
    meta = _meta(entries.pop("meta", None))
    declared = meta.get("arrays")
    if declared != describe(entries):
        raise ModelFileError(f"the metadata's 'arrays' {_short(declared)} do not describe the file's arrays "
                             f"{_short(describe(entries))}")  # fmt: skip
    if meta.get("sha256") != checksum(meta, entries):
        raise ModelFileError("checksum mismatch: the file was altered or damaged after it was exported")
    model = ModelFile(meta, entries)
    _check_model(model)
    return model


def _read_entries(archive: zipfile.ZipFile) -> dict[str, np.ndarray]:
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise ModelFileError(f"{len(infos)} entries; a model file has at most {MAX_ENTRIES}")
    total = sum(info.file_size for info in infos)
    if total > MAX_TOTAL_BYTES:
        raise ModelFileError(f"its entries would decompress to {total:,} bytes; at most {MAX_TOTAL_BYTES:,}")
    arrays: dict[str, np.ndarray] = {}
    for info in infos:
        name = info.filename.removesuffix(".npy")
        if not info.filename.endswith(".npy") or not ARRAY_NAME.match(name) or name in arrays:
            raise ModelFileError(f"unexpected entry {info.filename[:80]!r} (entries are <array name>.npy, once each)")
        limit = MAX_META_BYTES if name == "meta" else MAX_ENTRY_BYTES
        if info.file_size > limit + 4096:  # the .npy header is well under 4 KiB
            size = f"{info.file_size:,}"
            raise ModelFileError(f"entry {info.filename!r} would decompress to {size} bytes; at most {limit:,}")
        with archive.open(info) as entry:
            raw = _read_bounded(entry, info.file_size, info.filename)
        arrays[name] = _npy(raw, info.filename)
    return arrays


def _read_bounded(entry: Any, size: int, where: str) -> bytes:
    """The entry's bytes, never more than its declared ``size`` (the zip module also stops there)."""
    chunks, read = [], 0
    while read <= size:
        chunk = entry.read(min(_CHUNK, size + 1 - read))
        if not chunk:
            break
        chunks.append(chunk)
        read += len(chunk)
    if read != size:
        raise ModelFileError(f"entry {where!r}: {read:,} bytes instead of the declared {size:,}")
    return b"".join(chunks)


def _npy(raw: bytes, where: str) -> np.ndarray:
    stream = io.BytesIO(raw)
    try:
        major, _ = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(stream, max_header_size=4096)
    except (ValueError, SyntaxError, TypeError, EOFError) as exc:
        raise ModelFileError(f"entry {where!r} is not a .npy array: {exc}") from None
    if dtype.str not in DTYPES:
        raise ModelFileError(f"entry {where!r}: dtype {dtype} is not allowed (only {', '.join(sorted(DTYPES))})")
    if fortran or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ModelFileError(f"entry {where!r}: shape {shape} (fortran order {fortran}) is not allowed")
    count = math.prod(shape)
    payload = raw[stream.tell() :]
    if count * dtype.itemsize != len(payload):
        raise ModelFileError(f"entry {where!r}: shape {list(shape)} of {dtype} needs {count * dtype.itemsize:,} "
                             f"bytes, the entry holds {len(payload):,}")  # fmt: skip
    return np.frombuffer(payload, dtype=dtype).reshape(shape)


def _meta(array: np.ndarray | None) -> dict[str, Any]:
    if array is None:
        raise ModelFileError(f"no {META_ENTRY}: not a digitstream model file")
    if array.dtype != np.uint8 or array.ndim != 1:
        raise ModelFileError(f"{META_ENTRY} must be the JSON metadata as uint8 bytes")
    try:
        meta = json.loads(array.tobytes())
    except ValueError as exc:
        raise ModelFileError(f"{META_ENTRY} is not JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{META_ENTRY}: not a digitstream model file (format {FORMAT!r} expected)")
    if meta.get("format_version") != FORMAT_VERSION:
        got = _short(meta.get("format_version"))
        raise ModelFileError(f"format_version {got}: this version of digitstream reads {FORMAT_VERSION}")
    return meta


def _check_model(model: ModelFile) -> None:
    """The arrays are a learner state of the declared hyper-parameters, servable as they are."""
    meta = model.meta
    for field, kind in (("model", str), ("samples_learned", int), ("params", dict)):
        if not isinstance(meta.get(field), kind) or isinstance(meta.get(field), bool):
            raise ModelFileError(f"metadata field {field!r} is missing or not a {kind.__name__}")
    try:
        params = model.params
        state = model.learner_state()
        if params.rule == "mlp":
            check_arrays(state.arrays, params.hidden)
        else:
            for name, shape in _LINEAR.items():
                array = state.arrays.get(name)
                if array is None or array.shape != shape or array.dtype != np.float64:
                    raise ValueError(f"state array {name!r} missing, or not float64 {list(shape)}")
        expected = set(_LINEAR) if params.rule != "mlp" else set(check_arrays(state.arrays, params.hidden))
        if extra := sorted(set(state.arrays) - expected):
            raise ValueError(f"unexpected arrays {extra}")
        scorer_for(state)
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelFileError(f"not a usable model: {exc}") from None
    rolling = model.arrays.get(ROLLING_ARRAY)
    if rolling is not None and (rolling.dtype != np.uint8 or rolling.ndim != 1 or (rolling > 1).any()):
        raise ModelFileError(f"array {ROLLING_ARRAY!r} must be 0/1 outcomes (uint8, one dimension)")


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 200 else text[:197] + "..."
