"""Several models side by side (GET /compare): each one's latest snapshot metadata, read from Redis alone.

Only the metadata is read (no weights), so comparing neither loads models into the served-models LRU
nor evicts the ones being served; and it is the *latest* snapshot, what the worker has learned, as
``digitstream models compare`` reads it (a pinned version is a serving choice, not a learning one).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

import orjson

from digitstream.connections import AsyncRedisClient
from digitstream.contracts import SnapshotMeta
from digitstream.learner.params import HyperParameters
from digitstream.registry import MODEL_NAME_PATTERN, MODELS_KEY, ModelConfig, parse_models
from digitstream.settings import Settings
from digitstream.snapshot import META_FIELD

from .validation import InvalidInput

MAX_COMPARED = 8  # one chart stays readable, and one request stays cheap
READ_ATTEMPTS = 3  # the latest version may be trimmed between reading its number and its metadata


def parse_names(raw: str) -> list[str]:
    """``a,b,c`` as a list of 1 to ``MAX_COMPARED`` distinct model names; ``InvalidInput`` (422) otherwise."""
    names = [name.strip() for name in raw.split(",")]
    if not any(names):
        raise InvalidInput("names: give one or more model names, separated by commas")
    if len(names) > MAX_COMPARED:
        raise InvalidInput(f"names: at most {MAX_COMPARED} models at once, got {len(names)}")
    for name in names:
        if not re.fullmatch(MODEL_NAME_PATTERN, name):
            raise InvalidInput(f"names: {name[:80]!r} is not a model name (1 to 64 of A-Z a-z 0-9 _ . : -)")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidInput(f"names: {repeated[0]!r} is given more than once")
    return names


async def configs(client: AsyncRedisClient, settings: Settings, names: list[str]) -> list[ModelConfig]:
    """The registered configs of ``names``, in order; the service's default model needs no registration."""
    raw = await client.hmget(MODELS_KEY, names)
    found = parse_models({name: value for name, value in zip(names, raw, strict=True) if value is not None})
    out = []
    for name in names:
        config = found.get(name)
        if config is None and name == settings.model_name:
            config = ModelConfig.of_settings(settings, created_at=0.0)
        if config is None:
            raise InvalidInput(f"names: no model {name!r} is registered (see GET /models)", 404)
        out.append(config)
    return out


class MetaCache:
    """Parsed snapshot metadata by snapshot key: a model compared every few seconds is parsed once per version
    (checking the contract of a full learning curve takes ~2.5 ms, on the event loop)."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._parsed: dict[str, tuple[bytes | str, SnapshotMeta | None]] = {}

    def parse(self, key: str, raw: bytes | str) -> SnapshotMeta | None:
        """``raw`` as SnapshotMeta, None if it breaks the contract (shown as no numbers, never a 500)."""
        known = self._parsed.get(key)
        if known is not None and known[0] == raw:
            return known[1]
        try:
            meta: SnapshotMeta | None = SnapshotMeta.from_json(orjson.loads(raw))
        except ValueError:  # a ContractError too
            meta = None
        if len(self._parsed) >= self._size:
            del self._parsed[next(iter(self._parsed))]  # the oldest entry
        self._parsed[key] = (raw, meta)
        return meta


async def latest_meta(
    client: AsyncRedisClient, config: ModelConfig, cache: MetaCache
) -> tuple[int | None, SnapshotMeta | None]:
    """The latest snapshot's version and metadata, (None, None) before the first one."""
    keys = config.keys
    for _ in range(READ_ATTEMPTS):
        latest = await client.get(keys.snapshot_latest)
        if latest is None:
            return None, None
        version = int(latest)
        key = keys.snapshot(version)
        raw = await client.hget(key, META_FIELD)
        if raw is None:
            continue  # trimmed by a newer snapshot meanwhile: read the newer one
        return version, cache.parse(key, raw)
    return None, None


def compared(config: ModelConfig, version: int | None, meta: SnapshotMeta | None) -> dict[str, Any]:
    """One model's entry of the GET /compare body."""
    params = config.params
    if meta is not None:  # what the snapshot was learned with wins over the registry (or settings) entry
        with contextlib.suppress(ValueError):
            params = HyperParameters.from_json(meta.learner.params)
    metrics = meta.metrics if meta is not None else None
    return {
        "name": config.name,
        "rule": params.rule,
        "learning_rate": params.learning_rate,
        "stream": config.keys.samples,
        "version": version,
        "samples_learned": meta.samples_learned if meta is not None else 0,
        "created_at": meta.created_at if meta is not None else None,
        "prequential_accuracy": metrics.prequential_accuracy if metrics else None,
        "rolling_accuracy": metrics.rolling_accuracy if metrics else None,
        "rolling_window": metrics.rolling_window if metrics else 0,
        "learning_curve": [list(point) for point in metrics.learning_curve] if metrics else [],
    }


async def comparison(
    client: AsyncRedisClient, settings: Settings, names: list[str], cache: MetaCache
) -> dict[str, Any]:
    """The GET /compare body for ``names`` (already checked by ``parse_names``)."""
    found = await configs(client, settings, names)
    metas = await asyncio.gather(*(latest_meta(client, config, cache) for config in found))
    return {"models": [compared(config, *meta) for config, meta in zip(found, metas, strict=True)]}
