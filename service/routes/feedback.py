"""POST /feedback and /samples: labelled samples published to the stream, for the worker to learn."""

from __future__ import annotations

import numpy as np
from anyio import to_thread
from fastapi import FastAPI, HTTPException, Request, Response

from digitstream.settings import Settings

from .. import validation
from ..deps import MetricsDep, PredictionsDep, RedisDep, api_key_dependencies
from ..idempotency import REPLAYED_HEADER, Idempotency, IdempotencyKey, fingerprint
from ..json_arrays import read_samples
from ..predictions import AlreadyUsed
from ..schemas import FeedbackReceipt, FeedbackRequest, SamplesReceipt, samples_body
from .responses import errors

INLINE_SAMPLES_BYTES = 64 * 1024


def register(api: FastAPI, settings: Settings) -> None:
    guarded = api_key_dependencies(settings)
    max_batch = settings.max_batch
    ttl = settings.prediction_ttl
    once = Idempotency(settings)

    @api.post(
        "/feedback",
        tags=["learn"],
        dependencies=guarded,
        response_model=FeedbackReceipt,
        responses=errors(401, 403, 404, 409, 413, 415, 422, 429, 503),
    )
    async def feedback(
        body: FeedbackRequest,
        predictions: PredictionsDep,
        client: RedisDep,
        metrics: MetricsDep,
        response: Response,
        idempotency_key: IdempotencyKey = None,
    ) -> FeedbackReceipt:
        """Publish a served prediction's input with its true label; the worker will learn it.

        Each prediction takes one label: a second one answers 409, whichever replica it reaches.
        Inputs are kept for ``prediction_ttl`` seconds (shorter under a flood of predictions, see
        docs/service.md); an unknown or expired id answers 404. A retry with the same
        ``Idempotency-Key`` gets the first answer and publishes nothing.
        """
        asked = fingerprint("feedback", body.prediction_id, str(body.label))
        if idempotency_key and (earlier := await once.replay(client, idempotency_key, asked)):
            response.headers[REPLAYED_HEADER] = "true"
            return FeedbackReceipt(stream_id=earlier[0], prediction_id=body.prediction_id, label=body.label)
        try:
            pixels = await predictions.take(body.prediction_id)
        except AlreadyUsed:
            if idempotency_key and (earlier := await once.replay(client, idempotency_key, asked)):
                response.headers[REPLAYED_HEADER] = "true"  # the first copy of this request has just finished
                return FeedbackReceipt(stream_id=earlier[0], prediction_id=body.prediction_id, label=body.label)
            raise HTTPException(
                409, f"prediction_id: feedback was already given for prediction {body.prediction_id} (one label each)"
            ) from None
        if pixels is None:
            raise HTTPException(
                404, f"prediction_id: unknown or expired prediction {body.prediction_id} (inputs are kept {ttl:g} s)"
            )
        image = np.frombuffer(pixels, dtype=np.uint8).reshape(1, -1)
        try:
            [stream_id], replayed = await once.publish(client, idempotency_key, asked, image, np.array([body.label]))
        except BaseException:
            predictions.give_back(body.prediction_id, pixels)  # not learned: the label may be given again
            raise
        if replayed:  # a copy of this request, racing it, was first
            response.headers[REPLAYED_HEADER] = "true"
        else:
            metrics.feedback.inc()
        return FeedbackReceipt(stream_id=stream_id, prediction_id=body.prediction_id, label=body.label)

    @api.post(
        "/samples",
        tags=["learn"],
        dependencies=guarded,
        response_model=SamplesReceipt,
        summary="Publish labelled samples",
        description=f"For clients that cannot reach Redis: 1..{max_batch} samples, published in one transaction. "
        "A retry with the same Idempotency-Key gets the first answer and publishes nothing.",
        openapi_extra=samples_body(max_batch),
        responses=errors(401, 403, 413, 415, 422, 429, 503),
    )
    async def samples(
        request: Request, client: RedisDep, metrics: MetricsDep, response: Response,
        idempotency_key: IdempotencyKey = None,
    ) -> SamplesReceipt:  # fmt: skip
        body = await validation.read_body(request)
        if len(body) <= INLINE_SAMPLES_BYTES:
            images, labels = read_samples(body, max_batch)
        else:
            images, labels = await to_thread.run_sync(read_samples, body, max_batch)
        asked = fingerprint("samples", images, labels.astype("<i8")) if idempotency_key else ""
        stream_ids, replayed = await once.publish(client, idempotency_key, asked, images, labels)
        if replayed:
            response.headers[REPLAYED_HEADER] = "true"
        else:
            metrics.samples.inc(len(stream_ids))
        return SamplesReceipt(stream_ids=stream_ids, count=len(stream_ids))
