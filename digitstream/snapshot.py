"""Snapshot format: learner state as raw numpy arrays plus JSON metadata (never pickle).

A snapshot is stored as one Redis hash (see ``protocol``): ``meta`` holds the JSON metadata,
including a descriptor ``{"dtype", "shape"}`` of every array, and ``array:<name>`` holds that
array's raw little-endian bytes. Decoding accepts only whitelisted dtypes and checks every
length, so a damaged or hostile hash fails with ``SnapshotError`` instead of loading garbage.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .contracts import ContractError, SnapshotMeta
from .learner import HyperParameters, LearnerState
from .protocol import SCHEMA_VERSION

if TYPE_CHECKING:
    from .learner import Learner

META_FIELD = b"meta"  # the hash field holding the JSON metadata (the only place that names it)
VERSION_FIELD = b"version"  # when present, overrides meta["version"] (the store assigns versions)
ARRAY_PREFIX = b"array:"
_DTYPES: dict[str, np.dtype[Any]] = {
    "<f8": np.dtype("<f8"),
    "<f4": np.dtype("<f4"),  # the mlp rule's weights
    "<i8": np.dtype("<i8"),
    "|u1": np.dtype("u1"),
}
_MAX_ELEMENTS = 10_000_000


class SnapshotError(ValueError):
    """A snapshot that cannot be decoded safely."""


@dataclass
class Snapshot:
    """One version of a model: metadata (JSON-able, see ``typed_meta``) and the learner's arrays."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def version(self) -> int:
        return int(self.meta["version"])

    @property
    def samples_learned(self) -> int:
        return int(self.meta["samples_learned"])

    @property
    def last_id(self) -> str:
        return str(self.meta["last_id"])

    def typed_meta(self) -> SnapshotMeta:
        """The metadata as its contract (``digitstream.contracts``); SnapshotError if it breaks it."""
        try:
            return SnapshotMeta.from_json(self.meta)
        except ContractError as exc:
            raise SnapshotError(f"snapshot meta: {exc}") from None

    def learner_state(self) -> LearnerState:
        """The learner's state this snapshot holds (numpy only: what serving needs)."""
        learner_meta = self.meta["learner"]
        return LearnerState(
            HyperParameters.from_json(learner_meta["params"]), int(learner_meta["n_samples"]), self.arrays
        )

    def learner(self) -> Learner:
        """The learner this snapshot holds, ready to continue learning exactly (loads the compiled kernels)."""
        from .learner import learner_from_state

        return learner_from_state(self.learner_state())


def snapshot_of(learner: Learner, **meta: Any) -> Snapshot:
    """A snapshot of ``learner`` (arrays copied) with extra metadata fields."""
    state = learner.state()
    return Snapshot({"schema": SCHEMA_VERSION, **meta, "learner": state.meta()}, state.arrays)


def encode_snapshot(snapshot: Snapshot) -> dict[bytes, bytes]:
    """Hash fields for Redis: JSON meta with array descriptors, and raw array bytes."""
    descriptors = {}
    fields: dict[bytes, bytes] = {}
    for name, array in snapshot.arrays.items():
        arr = np.ascontiguousarray(array)
        dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        key = dtype.str
        if key not in _DTYPES:
            raise SnapshotError(f"array {name!r}: dtype {arr.dtype} is not allowed in snapshots")
        descriptors[name] = {"dtype": key, "shape": list(arr.shape)}
        fields[ARRAY_PREFIX + name.encode()] = arr.astype(dtype, copy=False).tobytes()
    meta = {**snapshot.meta, "arrays": descriptors}
    fields[META_FIELD] = json.dumps(meta, allow_nan=False, separators=(",", ":")).encode()
    return fields


def decode_snapshot(fields: dict[bytes, bytes]) -> Snapshot:
    """Inverse of :func:`encode_snapshot`; raises SnapshotError on anything unexpected."""
    raw_meta = fields.get(META_FIELD)
    if raw_meta is None:
        raise SnapshotError(f"snapshot has no {META_FIELD.decode()!r} field")
    try:
        meta = json.loads(raw_meta)
    except ValueError as exc:
        raise SnapshotError(f"snapshot meta is not JSON: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("arrays"), dict):
        raise SnapshotError("snapshot meta must be an object with an 'arrays' descriptor")
    if VERSION_FIELD in fields:
        try:
            meta["version"] = int(fields[VERSION_FIELD])
        except ValueError:
            raise SnapshotError(f"snapshot version is not an integer: {fields[VERSION_FIELD]!r}") from None
    for required in ("version", "samples_learned", "last_id", "learner"):
        if required not in meta:
            raise SnapshotError(f"snapshot meta lacks {required!r}")
    arrays = {name: _decode_array(name, spec, fields) for name, spec in meta.pop("arrays").items()}
    return Snapshot(meta, arrays)


def _decode_array(name: str, spec: Any, fields: dict[bytes, bytes]) -> np.ndarray:
    if not isinstance(spec, dict) or spec.get("dtype") not in _DTYPES or not isinstance(spec.get("shape"), list):
        raise SnapshotError(f"array {name!r}: bad descriptor {spec!r}")
    shape = spec["shape"]
    if not all(isinstance(d, int) and d >= 0 for d in shape) or math.prod(shape) > _MAX_ELEMENTS:
        raise SnapshotError(f"array {name!r}: bad shape {shape!r}")
    dtype = _DTYPES[spec["dtype"]]
    raw = fields.get(ARRAY_PREFIX + name.encode())
    expected = math.prod(shape) * dtype.itemsize
    if raw is None or len(raw) != expected:
        got = "nothing" if raw is None else f"{len(raw)} bytes"
        raise SnapshotError(f"array {name!r}: expected {expected} bytes, got {got}")
    array: np.ndarray = np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    return array
