"""Reading samples from each supported source, and refusing what cannot be read with a reason."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitstream.clients.sources import SourceError, epochs, image_pixels, load_image, load_samples
from digitstream.datasets import write_idx_images, write_idx_labels


def digits(mnist_train: tuple[np.ndarray, np.ndarray], n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    return mnist_train[0][:n], mnist_train[1][:n]


def write_csv(path: Path, images: np.ndarray, labels: np.ndarray, header: bool = False) -> None:
    lines = ["label," + ",".join(f"pixel{i}" for i in range(784))] if header else []
    lines += [f"{label}," + ",".join(str(v) for v in row) for row, label in zip(images, labels, strict=True)]
    path.write_text("\n".join(lines) + "\n")


def write_png_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    for i, (row, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(row.reshape(28, 28), "L").save(folder / f"{i:03d}.png")


# --- each format -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_an_idx_directory_gives_the_chosen_split(tmp_path: Path, mnist_train: tuple, suffix: str) -> None:
    images, labels = digits(mnist_train)
    write_idx_images(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images)
    write_idx_labels(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels)
    samples = load_samples(tmp_path, split="test")
    np.testing.assert_array_equal(samples.images, images)
    np.testing.assert_array_equal(samples.labels, labels)
    assert samples.locate(3) == "test #3"
    with pytest.raises(SourceError, match="train-images-idx3-ubyte"):
        load_samples(tmp_path, split="train")


def test_an_npz_with_images_and_labels_or_keras_names(tmp_path: Path, mnist_train: tuple) -> None:
    images, labels = digits(mnist_train)
    np.savez(tmp_path / "a.npz", images=images, labels=labels)
    np.savez_compressed(tmp_path / "b.npz", x_train=images.reshape(-1, 28, 28), y_train=labels)
    for name in ("a.npz", "b.npz"):
        samples = load_samples(tmp_path / name)
        np.testing.assert_array_equal(samples.images, images)
        np.testing.assert_array_equal(samples.labels, labels)
    assert load_samples(tmp_path / "a.npz").locate(4) == "a.npz[4]"


def test_an_npz_is_never_unpickled(tmp_path: Path) -> None:
    np.savez(tmp_path / "evil.npz", images=np.array([object()] * 2, dtype=object), labels=np.array([1, 2]))
    with pytest.raises(SourceError, match="without pickle"):
        load_samples(tmp_path / "evil.npz")


def test_npz_problems_are_named(tmp_path: Path) -> None:
    np.savez(tmp_path / "keys.npz", pictures=np.zeros((2, 784)), labels=np.zeros(2))
    with pytest.raises(SourceError, match=r"expected arrays 'images' and 'labels'.*found \['labels', 'pictures'\]"):
        load_samples(tmp_path / "keys.npz")
    np.savez(tmp_path / "shape.npz", images=np.zeros((2, 30, 30)), labels=np.zeros(2))
    with pytest.raises(SourceError, match=r"shape \(n, 784\) or \(n, 28, 28\), got float64 \[2, 30, 30\]"):
        load_samples(tmp_path / "shape.npz")
    np.savez(tmp_path / "count.npz", images=np.zeros((2, 784)), labels=np.zeros(3))
    with pytest.raises(SourceError, match=r"one label per image \(2\), got shape \[3\]"):
        load_samples(tmp_path / "count.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(SourceError, match=r"junk\.npz: not a readable \.npz file"):
        load_samples(tmp_path / "junk.npz")


@pytest.mark.parametrize("header", [False, True])
def test_a_csv_gives_label_then_pixels_per_row(tmp_path: Path, mnist_train: tuple, header: bool) -> None:
    images, labels = digits(mnist_train)
    write_csv(tmp_path / "d.csv", images, labels, header=header)
    samples = load_samples(tmp_path / "d.csv")
    np.testing.assert_array_equal(samples.images, images)
    np.testing.assert_array_equal(samples.labels, labels)
    assert samples.locate(0) == f"d.csv line {2 if header else 1}"


def test_a_gzipped_csv_is_read_too(tmp_path: Path, mnist_train: tuple) -> None:
    images, labels = digits(mnist_train, 5)
    write_csv(tmp_path / "d.csv", images, labels)
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress((tmp_path / "d.csv").read_bytes()))
    np.testing.assert_array_equal(load_samples(tmp_path / "d.csv.gz").images, images)


def test_csv_rows_that_cannot_be_read_are_set_aside_with_their_line_and_reason(tmp_path: Path) -> None:
    good = "3," + ",".join(["0"] * 784)
    lines = [good, "4," + ",".join(["1"] * 700), good, "5," + ",".join(["x"] * 784), "", "7," + ",".join(["300"] * 784)]
    (tmp_path / "bad.csv").write_text("\n".join(lines))
    samples = load_samples(tmp_path / "bad.csv")
    assert samples.labels.tolist() == [3, 3, 7]  # the 300s are readable; the publisher will judge them
    assert samples.unreadable == [
        ("bad.csv line 2", "expected 785 values (a label then 784 pixels), got 701"),
        ("bad.csv line 4", "values must be whole numbers"),
    ]
    assert [samples.locate(i) for i in range(3)] == ["bad.csv line 1", "bad.csv line 3", "bad.csv line 6"]


def test_an_empty_or_binary_csv_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("label,pixel0\n")
    with pytest.raises(SourceError, match="no data rows"):
        load_samples(tmp_path / "empty.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81 binary")
    with pytest.raises(SourceError, match="not a text CSV"):
        load_samples(tmp_path / "bin.csv")


def test_a_folder_of_pngs_takes_the_label_from_the_sub_folder(tmp_path: Path, mnist_train: tuple) -> None:
    images, labels = digits(mnist_train)
    write_png_folder(tmp_path, images, labels)
    samples = load_samples(tmp_path)
    order = np.lexsort((np.arange(len(labels)), labels))  # sorted by folder, then file name
    np.testing.assert_array_equal(samples.images, images[order])
    np.testing.assert_array_equal(samples.labels, labels[order])
    assert samples.locate(0) == f"{labels[order][0]}/{order[0]:03d}.png"


def test_image_folder_problems_are_reported_per_file_and_the_rest_is_read(tmp_path: Path) -> None:
    (tmp_path / "3").mkdir()
    Image.new("L", (28, 28)).save(tmp_path / "3" / "ok.png")
    Image.new("L", (40, 20)).save(tmp_path / "3" / "wide.png")
    (tmp_path / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "3" / ".hidden").write_text("ignored")
    (tmp_path / "cats").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    samples = load_samples(tmp_path)
    assert samples.labels.tolist() == [3]
    reasons = dict(samples.unreadable)
    assert reasons["3/wide.png"] == "image is 40x20 pixels; expected 28x28 (or a square image, which is scaled)"
    assert reasons["3/broken.png"].startswith("not a readable image")
    assert reasons["cats"] == "folder skipped: the label must be a sub-folder named 0..9"
    assert reasons["notes.txt"] == "file skipped: the label must be a sub-folder named 0..9"


def test_a_directory_that_is_neither_kind_is_refused_with_what_was_expected(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("?")
    with pytest.raises(SourceError, match=r"neither MNIST IDX files .* nor sub-folders named 0\.\.9"):
        load_samples(tmp_path)
    with pytest.raises(SourceError, match="unknown source type"):
        load_samples(tmp_path / "x.txt")


# --- image conversion ------------------------------------------------------------------------


def test_dark_ink_on_white_paper_is_inverted_to_mnist_colours(mnist_train: tuple) -> None:
    digit = mnist_train[0][0]
    paper = Image.fromarray(255 - digit.reshape(28, 28), "L")
    np.testing.assert_array_equal(image_pixels(paper), digit)
    np.testing.assert_array_equal(image_pixels(Image.fromarray(digit.reshape(28, 28), "L")), digit)


def test_colour_and_transparent_images_become_light_ink_on_black(mnist_train: tuple) -> None:
    digit = mnist_train[0][0].reshape(28, 28)
    rgb = Image.fromarray(np.stack([digit] * 3, axis=-1), "RGB")
    np.testing.assert_array_equal(image_pixels(rgb), digit.reshape(784))
    black_ink = np.zeros((28, 28, 4), dtype=np.uint8)
    black_ink[..., 3] = digit  # black strokes whose opacity is the digit, on a transparent sheet
    np.testing.assert_array_equal(image_pixels(Image.fromarray(black_ink, "RGBA")), digit.reshape(784))


def test_larger_square_images_are_scaled_to_28x28(mnist_train: tuple) -> None:
    digit = mnist_train[0][0].reshape(28, 28)
    big = Image.fromarray(digit, "L").resize((112, 112), Image.Resampling.NEAREST)
    pixels = image_pixels(big)
    assert pixels.shape == (784,)
    assert np.abs(pixels.astype(int) - digit.reshape(784)).mean() < 10


def test_load_image_names_the_file_in_every_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"nothing.png: no such file"):
        load_image(tmp_path / "nothing.png")
    (tmp_path / "t.png").write_text("text")
    with pytest.raises(SourceError, match=r"t.png: not a readable image"):
        load_image(tmp_path / "t.png")
    Image.new("L", (28, 28)).save(tmp_path / "cut.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "cut.png").read_bytes()[:40])
    with pytest.raises(SourceError, match=r"cut.png: (corrupt image data|not a readable image)"):
        load_image(tmp_path / "cut.png")


# --- selection -------------------------------------------------------------------------------


def test_epochs_select_offset_and_limit_and_repeat_them() -> None:
    passes = [p.tolist() for p in epochs(10, offset=2, limit=3, repeat=2)]
    assert passes == [[2, 3, 4], [2, 3, 4]]
    assert [p.tolist() for p in epochs(5, offset=3)] == [[3, 4]]


def test_shuffled_epochs_differ_from_pass_to_pass_but_repeat_with_the_seed() -> None:
    first = [p.tolist() for p in epochs(50, repeat=3, shuffle=7)]
    again = [p.tolist() for p in epochs(50, repeat=3, shuffle=7)]
    assert first == again
    assert first[0] != first[1]
    assert all(sorted(p) == list(range(50)) for p in first)
