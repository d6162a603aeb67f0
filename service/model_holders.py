"""Many served models: one ``ModelHolder`` per registered model, loaded on first use, kept in a bounded LRU.

The default model (``settings.model_name``) is the app's own holder and is never evicted. Any other
name is looked up in the registry (``digitstream.registry``): an unknown one is ``UnknownModel``
(404). A known one gets a holder whose follower task runs while it stays in the LRU: it hot-reloads
on its own snapshot events, like the default one. Past ``capacity`` holders, the least recently used
one is evicted: its follower is cancelled and its snapshot dropped, so the memory of a process is
bounded by ``capacity`` models whatever callers ask for. The next request for it loads it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass

from digitstream.connections import AsyncRedisClient
from digitstream.registry import MODELS_KEY, parse_models

from .model_holder import ModelHolder

log = logging.getLogger(__name__)


class UnknownModel(LookupError):
    """No model of that name is registered."""


@dataclass
class _Loaded:
    holder: ModelHolder
    task: asyncio.Task[None]


class ModelHolders:
    """Holders by model name: the default one, and at most ``capacity`` others (least recently used out)."""

    def __init__(
        self, client: AsyncRedisClient, default_name: str, default: ModelHolder, *, capacity: int, poll_interval: float
    ) -> None:
        self._client = client
        self.default_name = default_name
        self.default = default
        self.capacity = capacity
        self._poll_interval = poll_interval
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()
        self._loading: dict[str, asyncio.Future[ModelHolder]] = {}
        self.loads = 0
        self.evictions = 0

    @property
    def loaded(self) -> list[str]:
        """The names of the models held beside the default one, least recently used first."""
        return list(self._loaded)

    def items(self) -> list[tuple[str, ModelHolder]]:
        """(name, holder) of the default model and of every one held now (for /metrics)."""
        return [(self.default_name, self.default), *((n, loaded.holder) for n, loaded in self._loaded.items())]

    async def get(self, name: str) -> ModelHolder:
        """The holder of model ``name`` (loading it on first use); ``UnknownModel`` if it is not registered."""
        if name == self.default_name:
            return self.default
        loaded = self._loaded.get(name)
        if loaded is not None and not loaded.task.done():
            self._loaded.move_to_end(name)
            return loaded.holder
        pending = self._loading.get(name)
        if pending is not None:  # another request is loading it: share its result
            return await asyncio.shield(pending)
        future: asyncio.Future[ModelHolder] = asyncio.get_running_loop().create_future()
        self._loading[name] = future
        try:
            holder = await self._load(name)
            future.set_result(holder)
            return holder
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._loading[name]

    async def _load(self, name: str) -> ModelHolder:
        raw = await self._client.hget(MODELS_KEY, name)
        if raw is None:
            raise UnknownModel(name)
        config = parse_models({name: raw})[name]
        holder = ModelHolder(self._client, config.keys, self._poll_interval)
        started = asyncio.Event()

        async def follow() -> None:
            async with holder.running():
                started.set()
                await asyncio.Event().wait()  # until cancelled (evicted or shut down)

        task = asyncio.create_task(follow(), name=f"snapshot-follower-{name}")
        waiting = asyncio.create_task(started.wait())
        await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if task.done():  # the follower failed to start
            task.result()
        self._loaded[name] = _Loaded(holder, task)
        self.loads += 1
        while len(self._loaded) > self.capacity:
            evicted, old = self._loaded.popitem(last=False)
            self.evictions += 1
            log.info("model %r evicted from the served models (capacity %d)", evicted, self.capacity)
            await _cancel(old.task)
        return holder

    async def close(self) -> None:
        while self._loaded:
            _, old = self._loaded.popitem()
            await _cancel(old.task)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
