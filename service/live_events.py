"""Live events for ``GET /model/events``: what changed, as the snapshot follower saw it, fanned out to SSE clients.

Every replica derives the events from what its follower reads in Redis, so every replica tells
the same story: the follower wakes on the snapshot channel (the snapshot script publishes there)
and at least every ``poll_interval``; a pin or unpin shows at once on the replica that made it, on
the others at their next poll. After each sync,
``EventHub.observe`` compares with the previous sync and emits:

* ``snapshot``: a new latest version (its samples, accuracies, backlog);
* ``pin``: the pin pointer changed (``{"pinned": v}`` or ``{"pinned": null}``);
* ``drift``: the model's cumulative drift count grew (with the newest drift events);
* ``fault``: its cumulative fault count grew (with the newest faults);
* ``health``: the learning health changed (``service.learning``), e.g. to ``no-worker``.

Each event has an ``id`` (a counter of this process); a client that reconnects with
``Last-Event-ID`` gets the events it missed if they are still among the newest ``REPLAY``.
A slow client's queue is bounded: when it overflows, the client is disconnected (its browser
reconnects and resumes). At most ``settings.sse_max_clients`` clients per process, over all models
(503 beyond). Each served model has its own hub (``EventHubs.of``), created on its first stream.
On shutdown every stream ends, so uvicorn can stop (``close``; see ``install_exit_hook``).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from .model_holder import ModelHolder

EVENT_KINDS = ("snapshot", "pin", "drift", "fault", "health")
REPLAY = 256  # events kept for Last-Event-ID
QUEUE = 256  # events buffered per client before it is dropped as too slow
HEARTBEAT = 15.0  # seconds between comment lines on an idle stream (proxies close silent connections)
RETRY_MS = 2000  # the reconnection delay a browser's EventSource is told to use
NEWEST = 5  # drift events / faults sent with an event


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    data: dict[str, Any]

    def encode(self) -> bytes:
        return b"id: %d\nevent: %s\ndata: %s\n\n" % (self.id, self.kind.encode(), orjson.dumps(self.data))


class TooManyClients(RuntimeError):
    """``sse_max_clients`` streams are open in this process."""


class EventHubs:
    """The hubs of one app, one per served model (created on a model's first stream), sharing one client cap."""

    def __init__(self, max_clients: int, heartbeat: float = HEARTBEAT) -> None:
        self.max_clients = max_clients
        self.heartbeat = heartbeat
        self._hubs: weakref.WeakKeyDictionary[ModelHolder, EventHub] = weakref.WeakKeyDictionary()
        _apps.add(self)

    def of(self, holder: ModelHolder) -> EventHub:
        """The hub of ``holder``'s model: it listens to the holder's syncs from now on."""
        hub = self._hubs.get(holder)
        if hub is None:
            self._hubs[holder] = hub = EventHub(self)
            hub.observe(holder)  # the baseline: what changes after this is news
            holder.listeners.append(hub.observe)
        return hub

    @property
    def clients(self) -> int:
        return sum(hub.clients for hub in list(self._hubs.values()))

    def close(self) -> None:
        """End every stream (the server is stopping); safe from a signal handler or another thread."""
        for hub in list(self._hubs.values()):
            hub.close()


class EventHub:
    """The events of one model: derived from its holder at each sync, kept for replay, fanned out to queues."""

    def __init__(self, owner: EventHubs) -> None:
        self.owner = owner
        self._next_id = 1
        self._recent: deque[Event] = deque(maxlen=REPLAY)
        self._clients: set[asyncio.Queue[Event | None]] = set()
        self._seen: dict[str, Any] | None = None
        self.closing = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def clients(self) -> int:
        return len(self._clients)

    # -- producing --------------------------------------------------------------------------------
    def emit(self, kind: str, data: dict[str, Any]) -> Event:
        event = Event(self._next_id, kind, data)
        self._next_id += 1
        self._recent.append(event)
        for queue in list(self._clients):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:  # too slow: end its stream (the browser reconnects and replays)
                self._clients.discard(queue)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.get_nowait()
                    queue.put_nowait(None)
        return event

    def observe(self, holder: ModelHolder) -> None:
        """Emit what changed since the previous call (a ``ModelHolder`` listener)."""
        seen = _state(holder)
        before, self._seen = self._seen, seen
        if before is None:
            return  # the first look: nothing has changed yet
        model = holder.current
        if seen["latest"] != before["latest"] and seen["latest"] is not None:
            self.emit("snapshot", _snapshot(holder))
        if seen["pinned"] != before["pinned"]:
            served = model.version if model else None
            self.emit("pin", {"pinned": seen["pinned"], "served": served, "latest": seen["latest"]})
        if seen["drift"] > before["drift"]:
            events = [e.to_json() for e in model.meta.metrics.drift_events[-NEWEST:]] if model else []
            self.emit("drift", {"drift_events_total": seen["drift"], "new": seen["drift"] - before["drift"],
                                "events": events})  # fmt: skip
        if seen["faults"] > before["faults"]:
            status = holder.worker_status
            faults = status.faults if status is not None else model.meta.faults if model else ()
            newest = [f.to_json() for f in faults[-NEWEST:]]
            self.emit("fault", {"faults_total": seen["faults"], "new": seen["faults"] - before["faults"],
                                "fault_counts": seen["fault_counts"], "faults": newest})  # fmt: skip
        if seen["health"] != before["health"]:
            self.emit("health", holder.learning.to_json())

    # -- consuming --------------------------------------------------------------------------------
    def subscribe(self, last_event_id: str | None) -> asyncio.Queue[Event | None]:
        """A client's queue, preloaded with the events after ``last_event_id``; TooManyClients beyond the cap.

        ``stream(queue, ...)`` unsubscribes it when it ends.
        """
        if self.owner.clients >= self.owner.max_clients:
            raise TooManyClients(f"{self.owner.max_clients} event streams are open on this replica")
        queue: asyncio.Queue[Event | None] = asyncio.Queue(QUEUE)
        for event in self._replay(last_event_id):
            queue.put_nowait(event)
        self._clients.add(queue)
        return queue

    def _replay(self, last_event_id: str | None) -> list[Event]:
        try:
            after = int(last_event_id) if last_event_id else None
        except ValueError:
            after = None
        if after is None or after >= self._next_id:
            return []
        return [e for e in self._recent if e.id > after][-QUEUE:]

    async def stream(self, queue: asyncio.Queue[Event | None], hello: bytes) -> AsyncIterator[bytes]:
        """The SSE body: ``hello`` (the current state), then events and heartbeats until closed."""
        self._loop = asyncio.get_running_loop()
        yield b"retry: %d\n" % RETRY_MS + hello
        closing = asyncio.ensure_future(self.closing.wait())
        try:
            while not self.closing.is_set():
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, closing}, timeout=self.owner.heartbeat,
                                             return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                if getter not in done:
                    getter.cancel()
                    if not done:
                        yield b": heartbeat\n\n"
                    continue
                event = getter.result()
                if event is None:
                    return  # dropped as too slow
                yield event.encode()
        finally:
            closing.cancel()
            self._clients.discard(queue)

    def close(self) -> None:
        """End every stream (the server is stopping); safe from a signal handler or another thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self.closing.set()
        else:
            loop.call_soon_threadsafe(self.closing.set)


def _state(holder: ModelHolder) -> dict[str, Any]:
    model, status = holder.current, holder.worker_status
    meta = model.meta if model else None
    drift = max(status.drift_events_total if status else 0, meta.metrics.drift_events_total if meta else 0)
    counts = status.fault_counts if status else meta.fault_counts if meta else {}
    return {
        "latest": holder.latest_version, "pinned": holder.pinned, "drift": drift,
        "faults": sum(counts.values()), "fault_counts": dict(counts), "health": holder.learning.health,
    }  # fmt: skip


def _snapshot(holder: ModelHolder) -> dict[str, Any]:
    model = holder.current
    body: dict[str, Any] = {"latest": holder.latest_version, "served": model.version if model else None,
                            "pinned": holder.pinned, **holder.learning.to_json()}  # fmt: skip
    if model is not None and model.version == holder.latest_version:
        m = model.meta
        body.update(samples_learned=m.samples_learned, created_at=m.created_at,
                    prequential_accuracy=m.metrics.prequential_accuracy, rolling_accuracy=m.metrics.rolling_accuracy,
                    deadletter_count=m.deadletter_count)  # fmt: skip
    return body


def hello_event(holder: ModelHolder) -> bytes:
    """The first message of every stream: the state now (``event: hello``, no id: it is not replayed)."""
    return b"event: hello\ndata: %s\n\n" % orjson.dumps(_snapshot(holder))


_apps: weakref.WeakSet[EventHubs] = weakref.WeakSet()
_hooked = False


def install_exit_hook() -> None:
    """End every event stream when uvicorn is asked to stop (SIGINT/SIGTERM), so it need not wait for them.

    uvicorn waits for open responses before it shuts down, and an event stream never ends by
    itself; its ``Server.handle_exit`` (the signal handler) is wrapped once per process to close
    the hubs first.
    """
    global _hooked
    if _hooked:
        return
    try:
        import uvicorn
    except ImportError:  # pragma: no cover - the serve extra brings it
        return
    original = uvicorn.Server.handle_exit

    def handle_exit(self: Any, sig: int, frame: Any) -> None:
        for hubs in list(_apps):
            hubs.close()
        original(self, sig, frame)

    uvicorn.Server.handle_exit = handle_exit  # type: ignore[method-assign]
    _hooked = True


__all__ = ["EVENT_KINDS", "Event", "EventHub", "EventHubs", "TooManyClients", "hello_event", "install_exit_hook"]
