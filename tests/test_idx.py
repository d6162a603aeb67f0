"""Behaviour of the IDX reader/writer and load_mnist, on the shared MNIST files and on small made-up ones."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from digitstream.datasets import (
    DatasetError,
    Mnist,
    load_mnist,
    read_idx_images,
    read_idx_labels,
    write_idx_images,
    write_idx_labels,
)

SHARED_SHA256 = {
    "train-images-idx3-ubyte.gz": "02d108fb97c6f15a000ce5427c708509e05860f4526eaef1bc8d9de62220effd",
    "train-labels-idx1-ubyte.gz": "36eb25749c1c9fe8124783bae5e792a8a226c6b70d04491c4eee0870c063c661",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}


def small_set(n: int = 7, seed: int = 0) -> Mnist:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 784), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    return Mnist(images=images, labels=labels)


def write_split(directory: Path, data: Mnist, prefix: str = "train", suffix: str = ".gz") -> None:
    write_idx_images(directory / f"{prefix}-images-idx3-ubyte{suffix}", data.images)
    write_idx_labels(directory / f"{prefix}-labels-idx1-ubyte{suffix}", data.labels)


# --- the shared MNIST files -------------------------------------------------------------------


def test_shared_files_match_the_checksums_in_their_readme(mnist_dir: Path) -> None:
    for name, expected in SHARED_SHA256.items():
        assert hashlib.sha256((mnist_dir / name).read_bytes()).hexdigest() == expected, name


def test_the_training_split_has_22699_images_whose_first_label_is_5(mnist_dir: Path) -> None:
    train = load_mnist(mnist_dir, "train")
    assert len(train) == 22_699
    assert train.images.shape == (22_699, 784) and train.images.dtype == np.uint8
    assert train.labels.shape == (22_699,) and train.labels.dtype == np.uint8
    assert train.labels[0] == 5
    assert set(np.unique(train.labels)) == set(range(10))


def test_the_test_split_has_the_10000_official_images(mnist_dir: Path) -> None:
    test = load_mnist(mnist_dir, "test")
    assert len(test) == 10_000
    assert test.images.shape == (10_000, 784) and test.images.dtype == np.uint8
    assert test.labels[0] == 7  # the first official test digit
    assert 0 < test.images.mean() < 255


def test_loaded_arrays_are_writable_so_callers_may_shuffle_them_in_place(mnist_dir: Path) -> None:
    test = load_mnist(mnist_dir, "test")
    assert test.images.flags.writeable and test.labels.flags.writeable


def test_gzipped_and_raw_files_read_the_same(mnist_dir: Path, tmp_path: Path) -> None:
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(gzip.decompress((mnist_dir / f"{name}.gz").read_bytes()))
    raw = load_mnist(tmp_path, "test")
    gz = load_mnist(mnist_dir, "test")
    np.testing.assert_array_equal(raw.images, gz.images)
    np.testing.assert_array_equal(raw.labels, gz.labels)


def test_gzip_is_detected_by_content_not_by_file_name(mnist_dir: Path, tmp_path: Path) -> None:
    misnamed = tmp_path / "t10k-labels-idx1-ubyte"  # gzipped bytes under the raw name
    shutil.copyfile(mnist_dir / "t10k-labels-idx1-ubyte.gz", misnamed)
    np.testing.assert_array_equal(
        read_idx_labels(misnamed), read_idx_labels(mnist_dir / f"{misnamed.name}.gz")
    )


# --- writing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_written_files_read_back_identically(tmp_path: Path, suffix: str) -> None:
    data = small_set()
    write_split(tmp_path, data, suffix=suffix)
    loaded = load_mnist(tmp_path, "train")
    np.testing.assert_array_equal(loaded.images, data.images)
    np.testing.assert_array_equal(loaded.labels, data.labels)


def test_files_ending_in_gz_are_written_gzipped_and_others_raw(tmp_path: Path) -> None:
    data = small_set()
    write_idx_labels(tmp_path / "a.gz", data.labels)
    write_idx_labels(tmp_path / "a", data.labels)
    assert (tmp_path / "a.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert (tmp_path / "a").read_bytes()[:8] == struct.pack(">II", 0x801, len(data.labels))


def test_images_may_be_written_as_28_by_28_squares(tmp_path: Path) -> None:
    data = small_set()
    write_idx_images(tmp_path / "img", data.images.reshape(-1, 28, 28))
    np.testing.assert_array_equal(read_idx_images(tmp_path / "img"), data.images)


def test_an_empty_set_round_trips(tmp_path: Path) -> None:
    write_split(tmp_path, small_set(n=0), prefix="t10k")
    assert len(load_mnist(tmp_path, "test")) == 0


def test_writing_refuses_values_that_are_not_pixels_or_digits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"0\.\.255"):
        write_idx_images(tmp_path / "img", np.full((1, 784), 256))
    with pytest.raises(ValueError, match=r"0\.\.9"):
        write_idx_labels(tmp_path / "lab", [3, 10])


# --- malformed data ---------------------------------------------------------------------------


def test_a_file_with_the_wrong_magic_names_the_file_and_both_magics(tmp_path: Path) -> None:
    labels = tmp_path / "train-labels-idx1-ubyte"
    write_idx_labels(labels, [1, 2, 3])
    with pytest.raises(DatasetError) as excinfo:
        read_idx_images(labels)  # a label file where images were expected
    message = str(excinfo.value)
    assert str(labels) in message
    assert "0x00000801" in message and "0x00000803" in message


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_a_truncated_file_names_the_file_and_the_expected_and_actual_sizes(
    tmp_path: Path, suffix: str
) -> None:
    payload = struct.pack(">IIII", 0x803, 3, 28, 28) + bytes(2 * 784 + 100)  # 3 announced, 2.1 present
    path = tmp_path / f"images{suffix}"
    path.write_bytes(gzip.compress(payload) if suffix else payload)
    with pytest.raises(DatasetError) as excinfo:
        read_idx_images(path)
    message = str(excinfo.value)
    assert str(path) in message and "truncated" in message
    assert str(16 + 3 * 784) in message and str(len(payload)) in message


def test_a_cut_off_gzip_stream_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "images.gz"
    write_idx_images(path, small_set().images)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DatasetError, match=r"corrupt or truncated gzip.*download it again"):
        read_idx_images(path)


def test_a_header_shorter_than_its_fixed_size_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(b"\x00\x00\x08")
    with pytest.raises(DatasetError, match="truncated"):
        read_idx_labels(path)


def test_images_that_are_not_28_by_28_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "images"
    path.write_bytes(struct.pack(">IIII", 0x803, 1, 32, 32) + bytes(32 * 32))
    with pytest.raises(DatasetError, match=r"32x32.*expected 28x28"):
        read_idx_images(path)


def test_a_label_outside_0_to_9_is_reported_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(struct.pack(">II", 0x801, 4) + bytes([1, 2, 42, 3]))
    with pytest.raises(DatasetError) as excinfo:
        read_idx_labels(path)
    message = str(excinfo.value)
    assert str(path) in message and "outside 0..9" in message and "index 2: 42" in message


def test_images_and_labels_of_different_lengths_are_rejected(tmp_path: Path) -> None:
    data = small_set(n=5)
    write_idx_images(tmp_path / "train-images-idx3-ubyte.gz", data.images)
    write_idx_labels(tmp_path / "train-labels-idx1-ubyte.gz", data.labels[:4])
    with pytest.raises(DatasetError) as excinfo:
        load_mnist(tmp_path, "train")
    message = str(excinfo.value)
    assert "5 images" in message and "4" in message and "labels" in message
    assert "train-images-idx3-ubyte.gz" in message and "train-labels-idx1-ubyte.gz" in message


def test_a_missing_file_lists_the_names_looked_for_and_the_directory(tmp_path: Path) -> None:
    write_idx_images(tmp_path / "t10k-images-idx3-ubyte", small_set().images)
    with pytest.raises(DatasetError) as excinfo:
        load_mnist(tmp_path, "test")
    message = str(excinfo.value)
    assert "t10k-labels-idx1-ubyte.gz" in message and "t10k-labels-idx1-ubyte" in message
    assert str(tmp_path) in message


def test_a_missing_directory_is_named_as_such(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_mnist(tmp_path / "nowhere", "train")


def test_an_unknown_split_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train"):
        load_mnist(tmp_path, "validation")  # type: ignore[arg-type]
