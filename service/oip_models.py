"""Which models the Open Inference Protocol routes serve by name, and their kept versions.

Today a service serves one model, ``settings.model_name``: its served snapshot (the latest or the
pinned one) answers ``/v2/models/{name}/infer``, and any kept version answers
``/v2/models/{name}/versions/{v}/infer``. Every name lookup goes through :meth:`ModelCatalog.holder`,
so the model registry, once the service follows it, maps each registered name to its own holder
here and nowhere else.

An explicitly asked version other than the served one is read from Redis (it must be in the
kept versions' set) and a few are cached: the kept versions are immutable, so a cached one is
only ever dropped, when the worker trims it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from digitstream.connections import AsyncRedisClient
from digitstream.protocol import Keys
from digitstream.snapshot import SnapshotError

from .model_holder import ModelHolder, NoModelYet, ServedModel
from .oip import OipError

CACHED_VERSIONS = 4


class ModelCatalog:
    """Model names to served models (one model until the registry is followed)."""

    def __init__(self, name: str, keys: Keys, holder: ModelHolder, client: AsyncRedisClient) -> None:
        self._name = name
        self._keys = keys
        self._holder = holder
        self._client = client
        self._cache: OrderedDict[int, ServedModel] = OrderedDict()

    def names(self) -> list[str]:
        return [self._name]

    def holder(self, name: str) -> ModelHolder:
        """The holder of the model called ``name``; OipError 404 if there is none."""
        if name != self._name:
            raise OipError(f"model {name!r} is not served here (models: {', '.join(self.names())})", 404)
        return self._holder

    def served(self, name: str) -> ServedModel:
        """The snapshot ``name`` serves now (latest or pinned); OipError 503 before the first one."""
        try:
            return self.holder(name).require()
        except NoModelYet as exc:
            raise OipError(str(exc), 503) from None

    async def versions(self, name: str) -> list[int]:
        """The kept versions of ``name``, oldest first."""
        self.holder(name)
        members: list[bytes] = await self._client.zrange(self._keys.snapshot_versions, 0, -1)  # type: ignore[assignment]
        return [int(v) for v in members]

    async def version(self, name: str, version: str) -> ServedModel:
        """Kept version ``version`` of ``name``; OipError 404 if it is not kept (or not a version)."""
        holder = self.holder(name)
        served = holder.current
        number = _version_number(name, version)
        if served is not None and served.version == number:
            return served
        if await self._client.zscore(self._keys.snapshot_versions, number) is None:
            self._cache.pop(number, None)
            raise OipError(f"model {name!r} has no version {number} (kept: GET /v2/models/{name})", 404)
        model = self._cache.get(number)
        if model is None:
            model = await self._load(name, number)
            self._cache[number] = model
            while len(self._cache) > CACHED_VERSIONS:
                self._cache.popitem(last=False)
        return model

    async def _load(self, name: str, number: int) -> ServedModel:
        fields: dict[bytes, bytes] = await self._client.hgetall(self._keys.snapshot(number))  # type: ignore[assignment]
        if not fields:
            raise OipError(f"model {name!r} has no version {number} (trimmed just now)", 404)
        try:
            return await asyncio.to_thread(ServedModel.from_fields, fields)
        except (SnapshotError, ValueError, KeyError, TypeError) as exc:
            raise OipError(f"model {name!r} version {number} cannot be served: {exc}", 404) from None


def _version_number(name: str, version: str) -> int:
    if not version.isascii() or not version.isdigit() or len(version) > 18 or int(version) < 1:
        raise OipError(f"model {name!r} has no version {version[:40]!r} (versions are integers from 1)", 404)
    return int(version)
