"""Uploaded pictures become MNIST-like inputs: inverted, cropped, fitted in 20x20, centred by mass in 28x28."""

# ruff: noqa: F811  (the fixtures imported from tests.service_support are parameters here)

from __future__ import annotations

import io

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from digitstream.protocol import decode_entries
from digitstream.service.imaging import MAX_IMAGE_PIXELS, ImageError, to_mnist
from tests.service_support import LiveServer, live, make_app, trained, write  # noqa: F401


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def as_photo(mnist_image: np.ndarray, scale: int = 10, canvas: tuple[int, int] = (700, 420)) -> Image.Image:
    """A test digit as someone would draw it: dark ink on white paper, large, off-centre."""
    dark_on_light = Image.fromarray(255 - mnist_image.reshape(28, 28))
    big = dark_on_light.resize((28 * scale, 28 * scale), Image.Resampling.BILINEAR)
    paper = Image.new("L", canvas, 255)
    paper.paste(big, (canvas[0] - 28 * scale - 30, 50))
    return paper


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    grid = image.reshape(28, 28).astype(np.float64)
    rows, cols = np.indices(grid.shape)
    return float((grid * rows).sum() / grid.sum()), float((grid * cols).sum() / grid.sum())


def ink_box(image: np.ndarray) -> tuple[int, int, int, int]:
    grid = image.reshape(28, 28)
    rows, cols = np.flatnonzero(grid.any(axis=1)), np.flatnonzero(grid.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def test_a_large_dark_on_light_digit_becomes_its_mnist_original(mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    correlations = []
    for original in mnist_test[0][:100]:
        made = to_mnist(encode(as_photo(original)))
        assert made.shape == (784,) and made.dtype == np.uint8
        top, bottom, left, right = ink_box(made)
        assert max(bottom - top, right - left) + 1 <= 20
        row, col = centre_of_mass(made)
        assert abs(row - 14) <= 0.5 + 1e-9 and abs(col - 14) <= 0.5 + 1e-9
        correlations.append(np.corrcoef(made.astype(float), original.astype(float))[0, 1])
    assert np.median(correlations) > 0.93


def test_light_on_dark_jpeg_and_transparent_pngs_give_the_same_digit(mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    original = mnist_test[0][0]
    reference = to_mnist(encode(as_photo(original)))
    inverted = Image.fromarray(255 - np.asarray(as_photo(original)))
    assert np.abs(to_mnist(encode(inverted)).astype(int) - reference).max() <= 2
    jpeg = to_mnist(encode(as_photo(original).convert("RGB"), "JPEG", quality=90))
    assert np.corrcoef(jpeg.astype(float), reference.astype(float))[0, 1] > 0.97
    ink = np.asarray(255 - np.asarray(as_photo(original)), dtype=np.uint8)  # alpha = ink
    for colour in (0, 255):  # black strokes or white strokes on a transparent canvas
        rgba = np.zeros((*ink.shape, 4), dtype=np.uint8)
        rgba[..., :3] = colour
        rgba[..., 3] = ink
        made = to_mnist(encode(Image.fromarray(rgba, "RGBA")))
        assert np.abs(made.astype(int) - reference).max() <= 2, colour


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(30, 600),
    height=st.integers(30, 600),
    strokes=st.lists(st.tuples(*[st.floats(0.05, 0.95)] * 4), min_size=1, max_size=4),
    pen=st.floats(0.01, 0.2),
    dark_on_light=st.booleans(),
)
def test_any_drawing_fits_a_20_box_centred_by_mass(
    width: int, height: int, strokes: list[tuple[float, float, float, float]], pen: float, dark_on_light: bool
) -> None:
    paper, ink = (255, 0) if dark_on_light else (0, 255)
    image = Image.new("L", (width, height), paper)
    draw = ImageDraw.Draw(image)
    for x0, y0, x1, y1 in strokes:
        draw.line([(x0 * width, y0 * height), (x1 * width, y1 * height)], fill=ink,
                  width=max(2, int(pen * min(width, height))))  # fmt: skip
    made = to_mnist(encode(image))
    top, bottom, left, right = ink_box(made)
    assert max(bottom - top, right - left) + 1 <= 20
    row, col = centre_of_mass(made)
    # Centred by mass, unless the ink's own layout would push it out of the field (then it touches an edge).
    assert abs(row - 14) <= 0.5 + 1e-9 or top == 0 or bottom == 27
    assert abs(col - 14) <= 0.5 + 1e-9 or left == 0 or right == 27


UNUSABLE_UPLOADS = {
    "empty": (lambda: b"", 422, "file: empty upload"),
    "not an image": (lambda: b"not an image at all", 422, "file: not a readable PNG or JPEG image"),
    "truncated": (lambda: encode(Image.new("L", (50, 50), 255))[:60], 422, "file: not a readable PNG or JPEG image"),
    "gif": (lambda: encode(Image.new("L", (40, 40), 255), "GIF"), 422, "file: GIF images are not accepted"),
    "blank": (lambda: encode(Image.new("L", (300, 200), 200)), 422, "file: no digit found: the image is blank"),
    "too large": (
        lambda: encode(Image.new("L", (2000, MAX_IMAGE_PIXELS // 2000 + 1), 255), compress_level=1),
        413,
        f"file: image too large (2000x{MAX_IMAGE_PIXELS // 2000 + 1} pixels, limit {MAX_IMAGE_PIXELS:,})",
    ),
}


@pytest.mark.parametrize("kind", UNUSABLE_UPLOADS)
def test_unusable_uploads_are_refused_with_the_reason(kind: str) -> None:
    make, status, message = UNUSABLE_UPLOADS[kind]
    with pytest.raises(ImageError) as caught:
        to_mnist(make())
    assert caught.value.status_code == status
    assert caught.value.detail.startswith(message)


def test_predict_image_agrees_with_predict_on_the_mnist_originals(
    live: LiveServer, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    images = mnist_test[0][:40]
    agree = 0
    for original in images:
        upload = live.post("/predict/image", files={"file": ("digit.png", encode(as_photo(original)), "image/png")})
        assert upload.status_code == 200, upload.text
        body = upload.json()
        assert body["model_version"] == 1 and len(body["prediction_id"]) == 32
        agree += body["digit"] == live.predict(original)["digit"]
    assert agree >= 0.9 * len(images)


def test_feedback_on_an_uploaded_image_publishes_the_28x28_input(
    live: LiveServer, redis_client: redis.Redis, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    data = encode(as_photo(mnist_test[0][1]).convert("RGB"), "JPEG")
    body = live.post("/predict/image", files={"file": ("digit.jpg", data, "image/jpeg")}).json()
    assert live.post("/feedback", json={"prediction_id": body["prediction_id"], "label": 2}).status_code == 200
    decoded = decode_entries(redis_client.xrange("{digitstream}:samples"))  # type: ignore[arg-type]
    np.testing.assert_array_equal(decoded.images[0], to_mnist(data))
    assert decoded.labels.tolist() == [2]


def test_bad_uploads_get_a_4xx_naming_the_file_field(live: LiveServer) -> None:
    form = live.post("/predict/image", data={"other": "x"})  # urlencoded: no file can be in it
    assert form.status_code == 415 and form.json()["detail"].startswith("body: expected multipart/form-data")
    missing = live.post("/predict/image", data={"other": "x"}, files={"picture": ("x.png", b"...", "image/png")})
    assert missing.status_code == 422 and missing.json()["detail"].startswith("file: field required")
    garbage = live.post("/predict/image", files={"file": ("x.png", b"\x89PNG garbage", "image/png")})
    assert garbage.status_code == 422 and garbage.json()["detail"].startswith("file: not a readable PNG or JPEG")
