"""The model file (.npz + JSON metadata): a round trip, and every damaged or hostile file refused by name.

Hostile files are built by hand (a pickled object array, a zip bomb, a huge declared shape, a
lying zip header...) and by hypothesis, which mutates a real file and builds random archives of
random ``.npy`` headers: reading must return the model or raise ``ModelFileError``, nothing else,
and never allocate what a header merely declares.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digitstream.learner import HyperParameters, new_learner
from digitstream.model_file import (
    MAX_ENTRY_BYTES,
    ModelFile,
    ModelFileError,
    checksum,
    make_model_file,
    model_file_bytes,
    read_model_file,
)


def model_of(rule: str = "softmax", n: int = 30, **params: Any) -> ModelFile:
    learner = new_learner(HyperParameters.for_rule(rule, **params))  # type: ignore[arg-type]
    rng = np.random.default_rng(7)
    learner.learn_many(rng.integers(0, 256, (n, 784), dtype=np.uint8), rng.integers(0, 10, n))
    state = learner.state()
    arrays = {**state.arrays, "rolling_correct": np.array([1, 0, 1], dtype=np.uint8)}
    meta = {"model": "m", "version": 3, "rule": rule, "params": state.params.to_json(), "samples_learned": n,
            "created_at": 1.7e9, "exported_at": 1.7e9, "metrics": {}, "learner": state.meta()}  # fmt: skip
    return make_model_file(meta, arrays)


@pytest.fixture(scope="module")
def model() -> ModelFile:
    return model_of()


@pytest.fixture(scope="module")
def good(model: ModelFile) -> bytes:
    return model_file_bytes(model)


def zipped(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, array, allow_pickle=allow_pickle)
    return out.getvalue()


def rebuilt(model: ModelFile, *, meta: dict[str, Any] | None = None, **arrays: np.ndarray | None) -> bytes:
    """The file with some arrays replaced (None: removed), described and checksummed anew: only its content is wrong."""
    new = {**model.arrays, **arrays}
    new = {k: v for k, v in new.items() if v is not None}
    full = {**model.meta, **(meta or {}), "arrays": {k: {"dtype": v.dtype.str, "shape": list(v.shape)}
                                                     for k, v in sorted(new.items())}}  # fmt: skip
    full["sha256"] = checksum(full, new)
    return model_file_bytes(ModelFile(full, new))


def refused(data: bytes, *fragments: str) -> str:
    with pytest.raises(ModelFileError) as caught:
        read_model_file(data)
    for fragment in fragments:
        assert fragment in str(caught.value), str(caught.value)
    return str(caught.value)


@pytest.mark.parametrize("rule", ["softmax", "mlp"])
def test_a_model_file_round_trips_and_numpy_reads_it_without_pickle(rule: str) -> None:
    model = model_of(rule, **({"hidden": 16} if rule == "mlp" else {}))
    data = model_file_bytes(model)
    back = read_model_file(data)
    assert back.meta == model.meta and back.meta["format_version"] == 1 and len(back.meta["sha256"]) == 64
    assert back.arrays.keys() == model.arrays.keys()
    for name, array in model.arrays.items():
        assert back.arrays[name].dtype == array.dtype and np.array_equal(back.arrays[name], array)
    with np.load(io.BytesIO(data), allow_pickle=False) as plain:
        assert json.loads(plain["meta"].tobytes())["rule"] == rule
        assert np.array_equal(plain["bias" if rule != "mlp" else "b2"], model.arrays["bias" if rule != "mlp" else "b2"])


def test_damaged_files_are_refused_by_name(model: ModelFile, good: bytes) -> None:
    for cut in (0, 10, len(good) // 2, len(good) - 1):
        refused(good[:cut], "not a readable .npz")
    refused(b"PK\x03\x04" + bytes(100), "not a readable .npz")
    flipped = bytearray(good)
    flipped[200] ^= 0xFF  # inside the first entry's compressed data
    with pytest.raises(ModelFileError):
        read_model_file(bytes(flipped))


def test_a_changed_value_breaks_the_checksum(model: ModelFile) -> None:
    arrays = dict(model.arrays)
    arrays["bias"] = arrays["bias"].copy()
    arrays["bias"][0] += 1e-9
    refused(model_file_bytes(ModelFile(model.meta, arrays)), "checksum mismatch")
    refused(model_file_bytes(ModelFile({**model.meta, "samples_learned": 1}, model.arrays)), "checksum mismatch")


def test_a_pickled_object_array_is_refused_without_unpickling(good: bytes) -> None:
    entries = {"meta.npy": zipfile.ZipFile(io.BytesIO(good)).read("meta.npy")}
    entries["wt.npy"] = npy(np.array([{"boom": 1}], dtype=object), allow_pickle=True)
    refused(zipped(entries), "'wt.npy'", "dtype object is not allowed")


def test_wrong_shapes_dtypes_names_and_non_finite_weights_are_refused(model: ModelFile) -> None:
    refused(rebuilt(model, wt=model.arrays["wt"].T.copy()), "not a usable model", "'wt'")
    refused(rebuilt(model, wt=model.arrays["wt"].astype(np.float32)), "not a usable model", "'wt'")
    refused(rebuilt(model, bias=None), "not a usable model", "'bias'")
    refused(rebuilt(model, extra=np.zeros(3)), "unexpected arrays ['extra']")
    nan = model.arrays["wt"].copy()
    nan[0, 0] = np.nan
    refused(rebuilt(model, wt=nan, acc_wt=np.zeros_like(nan)), "not a usable model")
    refused(rebuilt(model, rolling_correct=np.array([2], dtype=np.uint8)), "'rolling_correct' must be 0/1")
    refused(rebuilt(model, meta={"params": {"rule": "nonsense"}}), "not a usable model")
    refused(rebuilt(model, meta={"samples_learned": "many"}), "'samples_learned'")
    refused(rebuilt(model, meta={"format_version": 2}), "format_version 2")
    refused(rebuilt(model, meta={"format": "other"}), "not a digitstream model file")


def test_metadata_that_does_not_describe_the_arrays_is_refused(model: ModelFile) -> None:
    meta = {**model.meta, "arrays": {**model.meta["arrays"], "wt": {"dtype": "<f8", "shape": [1]}}}
    refused(model_file_bytes(ModelFile(meta, model.arrays)), "do not describe the file's arrays")
    no_meta = {f"{k}.npy": npy(v) for k, v in model.arrays.items()}
    refused(zipped(no_meta), "no meta.npy")
    refused(zipped({**no_meta, "meta.npy": npy(np.frombuffer(b"{nope", dtype=np.uint8))}), "meta.npy is not JSON")
    refused(zipped({**no_meta, "meta.npy": npy(np.zeros(3))}), "uint8 bytes")


def test_zip_bombs_and_huge_declared_shapes_are_refused_before_allocating(good: bytes) -> None:
    meta = zipfile.ZipFile(io.BytesIO(good)).read("meta.npy")
    bomb = zipped({"meta.npy": meta, "wt.npy": bytes(MAX_ENTRY_BYTES + 10_000)})  # 16 MB of zeros: ~16 kB zipped
    assert len(bomb) < 100_000
    refused(bomb, "'wt.npy' would decompress to")
    fifteen = bytes(15 * 1024 * 1024)
    refused(zipped({"meta.npy": meta, **{f"a{i}.npy": fifteen for i in range(9)}}), "would decompress to", "at most")
    many = zipped({"meta.npy": meta, **{f"a{i}.npy": npy(np.zeros(1)) for i in range(40)}})
    refused(many, "41 entries")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    refused(zipped({"meta.npy": meta, "wt.npy": header.getvalue() + bytes(8)}), "needs 8,000,000,000,000 bytes")
    refused(zipped({"meta.npy": meta, "wt.npy": npy(np.zeros(3, dtype=">f8"))}), "dtype >f8 is not allowed")
    refused(zipped({"meta.npy": meta, "wt.npy": npy(np.asfortranarray(np.zeros((2, 2))))}), "fortran order True")
    refused(zipped({"meta.npy": meta, "../wt.npy": npy(np.zeros(1))}), "unexpected entry")


def test_a_zip_header_that_understates_its_entry_is_caught(good: bytes) -> None:
    """An entry decompressing to more than its declared size stops at the declared size (and fails its CRC)."""
    meta = zipfile.ZipFile(io.BytesIO(good)).read("meta.npy")
    data = bytearray(zipped({"meta.npy": meta, "wt.npy": npy(np.zeros(100_000))}))
    archive = zipfile.ZipFile(io.BytesIO(bytes(data)))
    info = archive.getinfo("wt.npy")
    small = (1000).to_bytes(4, "little")
    data[info.header_offset + 22 : info.header_offset + 26] = small  # local header: uncompressed size
    for offset in _central_headers(bytes(data)):
        if bytes(data)[offset + 46 : offset + 46 + 6] == b"wt.npy":
            data[offset + 24 : offset + 28] = small  # central directory: uncompressed size
    refused(bytes(data))


def _central_headers(data: bytes) -> list[int]:
    offsets, start = [], 0
    while (found := data.find(b"PK\x01\x02", start)) >= 0:
        offsets.append(found)
        start = found + 4
    return offsets


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_mutated_files_give_the_model_or_a_model_file_error(
    good: bytes, model: ModelFile, data: st.DataObject
) -> None:
    mutated = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "zero-run"]))
        at = data.draw(st.integers(0, max(0, len(mutated) - 1)))
        if kind == "flip":
            mutated[at] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del mutated[at : at + data.draw(st.integers(1, 64))]
        elif kind == "insert":
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=32))
        else:
            mutated[at : at + 16] = bytes(16)
    try:
        back = read_model_file(bytes(mutated))
    except ModelFileError:
        return
    assert back.meta == model.meta  # a change the checksum does not cover (e.g. a zip timestamp): same model


_DESCR = st.sampled_from(["<f8", "<f4", "<i8", "|u1", ">f8", "|O", "<c16", "<U3", "|b1", "V8"])
_SHAPE = st.lists(st.one_of(st.integers(0, 40), st.just(10**9), st.just(2**62)), max_size=3).map(tuple)


@st.composite
def npy_entries(draw: st.DrawFn) -> bytes:
    header = {"descr": draw(_DESCR), "fortran_order": draw(st.booleans()), "shape": draw(_SHAPE)}
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue() + draw(st.binary(max_size=400))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    entries=st.dictionaries(st.sampled_from(["wt", "bias", "acc_wt", "norm", "x", "meta"]), npy_entries(), max_size=5),
    compression=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]),
)
def test_fuzz_random_archives_of_random_npy_headers_are_refused(entries: dict[str, bytes], compression: int) -> None:
    refused(zipped({f"{k}.npy": v for k, v in entries.items()}, compression))
