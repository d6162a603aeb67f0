"""POST /feedback and /samples: labelled samples published to the stream, for the worker to learn."""

from __future__ import annotations

import numpy as np
from anyio import to_thread
from fastapi import FastAPI, HTTPException, Request

from digitstream.settings import Settings

from .. import validation
from ..deps import MetricsDep, PredictionsDep, RedisDep, api_key_dependencies
from ..schemas import FeedbackReceipt, FeedbackRequest, SamplesReceipt, samples_body
from ..stream import publish
from .responses import errors

INLINE_SAMPLES_BYTES = 64 * 1024


def register(api: FastAPI, settings: Settings) -> None:
    guarded = api_key_dependencies(settings)
    keys = settings.keys
    max_batch = settings.max_batch
    ttl = settings.prediction_ttl

    @api.post(
        "/feedback",
        tags=["learn"],
        dependencies=guarded,
        response_model=FeedbackReceipt,
        responses=errors(401, 403, 404, 413, 422, 503),
    )
    async def feedback(
        body: FeedbackRequest, predictions: PredictionsDep, client: RedisDep, metrics: MetricsDep
    ) -> FeedbackReceipt:
        """Publish a served prediction's input with its true label; the worker will learn it.

        Inputs are kept for ``prediction_ttl`` seconds (shorter under a flood of predictions, see
        docs/service.md); an unknown or expired id answers 404.
        """
        pixels = await predictions.get(body.prediction_id)
        if pixels is None:
            raise HTTPException(
                404, f"prediction_id: unknown or expired prediction {body.prediction_id} (inputs are kept {ttl:g} s)"
            )
        image = np.frombuffer(pixels, dtype=np.uint8).reshape(1, -1)
        [stream_id] = await publish(client, keys, image, np.array([body.label]))
        metrics.feedback.inc()
        return FeedbackReceipt(stream_id=stream_id, prediction_id=body.prediction_id, label=body.label)

    @api.post(
        "/samples",
        tags=["learn"],
        dependencies=guarded,
        response_model=SamplesReceipt,
        summary="Publish labelled samples",
        description=f"For clients that cannot reach Redis: 1..{max_batch} samples, published in one transaction.",
        openapi_extra=samples_body(max_batch),
        responses=errors(401, 403, 413, 422, 503),
    )
    async def samples(request: Request, client: RedisDep, metrics: MetricsDep) -> SamplesReceipt:
        body = await validation.read_body(request)

        def parse() -> tuple[np.ndarray, np.ndarray]:
            data = validation.parse_json(body)
            return validation.samples(validation.get_field(data, "samples"), max_batch)

        images, labels = parse() if len(body) <= INLINE_SAMPLES_BYTES else await to_thread.run_sync(parse)
        stream_ids = await publish(client, keys, images, labels)
        metrics.samples.inc(len(stream_ids))
        return SamplesReceipt(stream_ids=stream_ids, count=len(stream_ids))
