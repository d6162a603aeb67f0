"""Which models the Open Inference Protocol routes serve by name, and their kept versions.

Every registered model is served by its name (``service.model_holders``: the default model,
``settings.model_name``, and any other loaded on first use into the bounded LRU). Its served
snapshot (the latest or the pinned one) answers ``/v2/models/{name}/infer``; any kept version
answers ``/v2/models/{name}/versions/{v}/infer``.

An explicitly asked version other than the served one is read from Redis (it must be in the
model's kept versions) and a few are cached: kept versions are immutable, so a cached one is only
ever dropped, when the worker trims it.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict

from digitstream.connections import AsyncRedisClient
from digitstream.registry import MODEL_NAME_PATTERN
from digitstream.snapshot import SnapshotError

from .model_holder import ModelHolder, ServedModel
from .model_holders import ModelHolders, UnknownModel
from .oip import OipError

CACHED_VERSIONS = 4


class ModelCatalog:
    """Model names to holders and kept versions, with the protocol's errors (404, 503)."""

    def __init__(self, holders: ModelHolders, client: AsyncRedisClient) -> None:
        self._holders = holders
        self._client = client
        self._cache: OrderedDict[tuple[str, int], ServedModel] = OrderedDict()

    async def holder(self, name: str) -> ModelHolder:
        """The holder of the model called ``name``; OipError 404 if none is registered."""
        if re.fullmatch(MODEL_NAME_PATTERN, name) is None:
            raise OipError(f"model {name[:80]!r} is not served here (not a model name)", 404)
        try:
            return await self._holders.get(name)
        except UnknownModel:
            raise OipError(f"model {name!r} is not served here (the registered models: GET /models)", 404) from None

    async def served(self, name: str) -> ServedModel:
        """The snapshot ``name`` serves now (latest or pinned); OipError 503 before its first one."""
        model = (await self.holder(name)).current
        if model is None:
            raise OipError(f"model {name!r} has no snapshot loaded yet: its worker writes the first one", 503)
        return model

    async def versions(self, name: str) -> list[int]:
        """The kept versions of ``name``, oldest first."""
        keys = (await self.holder(name)).keys
        members: list[bytes] = await self._client.zrange(keys.snapshot_versions, 0, -1)  # type: ignore[assignment]
        return [int(v) for v in members]

    async def version(self, name: str, version: str) -> ServedModel:
        """Kept version ``version`` of ``name``; OipError 404 if it is not kept (or not a version)."""
        holder = await self.holder(name)
        number = _version_number(name, version)
        served = holder.current
        if served is not None and served.version == number:
            return served
        keys = holder.keys
        cache_key = (keys.model, number)
        if await self._client.zscore(keys.snapshot_versions, number) is None:
            self._cache.pop(cache_key, None)
            raise OipError(f"model {name!r} has no version {number} (kept: GET /v2/models/{name})", 404)
        model = self._cache.get(cache_key)
        if model is None:
            fields: dict[bytes, bytes] = await self._client.hgetall(keys.snapshot(number))  # type: ignore[assignment]
            if not fields:
                raise OipError(f"model {name!r} has no version {number} (trimmed just now)", 404)
            try:
                model = await asyncio.to_thread(ServedModel.from_fields, fields)
            except (SnapshotError, ValueError, KeyError, TypeError) as exc:
                raise OipError(f"model {name!r} version {number} cannot be served: {exc}", 404) from None
            self._cache[cache_key] = model
            while len(self._cache) > CACHED_VERSIONS:
                self._cache.popitem(last=False)
        return model


def _version_number(name: str, version: str) -> int:
    if not version.isascii() or not version.isdigit() or len(version) > 18 or int(version) < 1:
        raise OipError(f"model {name!r} has no version {version[:40]!r} (versions are integers from 1)", 404)
    return int(version)
