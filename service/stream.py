"""Publishing labelled samples to the model's stream (feedback and POST /samples), in canonical form."""

from __future__ import annotations

import numpy as np

from digitstream.connections import AsyncRedisClient
from digitstream.protocol import Keys, encode_sample


async def publish(client: AsyncRedisClient, keys: Keys, images: np.ndarray, labels: np.ndarray) -> list[str]:
    """XADD every sample in one MULTI/EXEC (all or none); returns the stream ids in order."""
    async with client.pipeline(transaction=True) as pipe:
        for image, label in zip(images, labels, strict=True):
            pipe.xadd(keys.samples, encode_sample(image, int(label)))  # type: ignore[arg-type]
        ids = await pipe.execute()
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
