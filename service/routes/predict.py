"""POST /predict, /predict/batch, /predict/image: the served model's answers (orjson in and out)."""

from __future__ import annotations

import numpy as np
import orjson
from anyio import to_thread
from fastapi import FastAPI, Request, Response
from starlette.datastructures import State

from digitstream.settings import Settings

from .. import validation
from ..deps import MetricsDep, ModelDep
from ..errors import json_response
from ..imaging import to_mnist
from ..json_arrays import read_images
from ..metrics import ServiceMetrics
from ..model_holder import ServedModel
from ..schemas import BatchPrediction, Prediction, batch_body, predict_body, upload_body
from ..uploads import form_file, give_memory_back
from .fast_route import fast_post
from .responses import errors

INLINE_BATCH_BYTES = 64 * 1024  # smaller batches are scored on the event loop: a thread hop costs more


def register_single(api: FastAPI) -> None:
    """POST /predict alone: the app registers it first, as routes are matched in order."""

    async def predict(request: Request) -> Response:
        """The digit in one 28x28 image, with the probabilities and a ``prediction_id`` for /feedback."""
        # The hot path reads the lifespan's objects itself: each FastAPI dependency costs ~15 us a request.
        state = request.app.state
        model = state.holder.require()
        data = validation.parse_json(await validation.read_body(request))
        pixels = validation.pixel_bytes(validation.get_field(data, "pixels"))
        return await single_answer(state, model, pixels)

    fast_post(
        api, "/predict", predict,
        tags=["predict"], response_model=Prediction, summary="Predict one image",
        openapi_extra=predict_body(), responses=errors(413, 422, 503),
    )  # fmt: skip


def register(api: FastAPI, settings: Settings) -> None:
    """POST /predict/batch and /predict/image."""
    max_batch = settings.max_batch

    @api.post(
        "/predict/batch",
        tags=["predict"],
        response_model=BatchPrediction,
        summary="Predict many images",
        description=f"Up to {max_batch} images per request, as JSON or as raw bytes (N x 784, the fastest).",
        openapi_extra=batch_body(max_batch),
        responses=errors(413, 422, 503),
    )
    async def predict_batch(request: Request, model: ModelDep, metrics: MetricsDep) -> Response:
        return await batch_answer(request, model, metrics, max_batch)

    max_pixels = settings.max_image_pixels

    async def predict_image(request: Request) -> Response:
        """Turn the picture into an MNIST-like 28x28 input, then answer as POST /predict does.

        Grey levels; inverted if the digit is dark on a light background; cropped to the ink;
        fitted in a 20x20 box keeping the aspect ratio; centred by its centre of mass in 28x28.
        The 28x28 input is what /feedback later publishes. PNG and JPEG only, at most
        ``max_image_pixels`` (read from the header: a larger picture is refused before it is
        decoded); a few uploads are decoded at once per process, more answer 503 with Retry-After.
        """
        return await image_answer(request, request.app.state.holder.require(), max_pixels)

    fast_post(
        api, "/predict/image", predict_image,
        tags=["predict"], response_model=Prediction, summary="Predict an uploaded PNG/JPEG",
        openapi_extra=upload_body(max_pixels), responses=errors(413, 415, 422, 503),
    )  # fmt: skip


async def batch_answer(request: Request, model: ServedModel, metrics: ServiceMetrics, max_batch: int) -> Response:
    """The /predict/batch answer: JSON or raw bytes in, scored off the event loop when large."""
    binary = request.headers.get("content-type", "").startswith("application/octet-stream")
    body = await validation.read_body(request)

    def answer() -> bytes:
        images = validation.binary_images(body, max_batch) if binary else read_images(body, max_batch)
        digits, proba = model.predict(images)
        metrics.images.inc(len(digits))
        return orjson.dumps(
            {"digits": digits, "probabilities": proba, "model_version": model.version,
             "samples_learned": model.samples_learned},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )  # fmt: skip

    payload = answer() if len(body) <= INLINE_BATCH_BYTES else await to_thread.run_sync(answer)
    return Response(payload, media_type="application/json")


async def image_answer(request: Request, model: ServedModel, max_pixels: int) -> Response:
    """The /predict/image answer: the upload made MNIST-like in a decode slot, then scored."""
    state = request.app.state
    state.decoders.check()  # all busy: refused before the body is even read
    body = await validation.read_body(request)
    content_type = request.headers.get("content-type", "")
    image = await state.decoders.run(_upload_to_mnist, body, content_type, max_pixels)
    return await single_answer(state, model, image.tobytes())


def _upload_to_mnist(body: bytes | bytearray, content_type: str, max_pixels: int) -> np.ndarray:
    """The MNIST-like input of the ``file`` part of a multipart upload (in a decode thread)."""
    try:
        return to_mnist(form_file(body, content_type), "file", max_pixels)
    finally:
        give_memory_back()


async def single_answer(state: State, model: ServedModel, pixels: bytes) -> Response:
    """The /predict answer for one image (784 bytes), scored together with concurrent requests."""
    digit, proba = await state.batcher.predict(model, pixels)
    state.metrics.images.inc()
    return json_response({
        "digit": digit,
        "probabilities": proba,
        "model_version": model.version,
        "samples_learned": model.samples_learned,
        "prediction_id": state.predictions.keep(pixels),
    })  # fmt: skip
