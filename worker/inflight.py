"""The batches handed to the learner thread and not finished yet, in stream order.

The learner thread (one per worker, ``worker.learner_thread``) learns each batch on the
learner the batch before it leaves, so a batch can be queued before the one ahead of it is
finished: the learner goes from batch to batch while the main thread finishes the one before
(dead letters, position, metrics). Only the learner thread touches the learner while a batch is in
flight; the main thread takes it back (``Learned.learner``) as it finishes each batch, and uses its
state (a snapshot) only with none in flight. The learner thread does nothing but learn: scoring the
predictions (river's ADWIN among it, about an eighth of the learning time) is the main thread's.

A batch with nothing to learn (every sample a duplicate) is queued too, without a future, so that
it is consumed in its turn.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from digitstream.learner import Learner
from digitstream.protocol import DecodedBatch

from .isolate import Learned, learn_guarded
from .learner_thread import LearnerThread


@dataclass
class InFlight:
    """A batch handed to the learner thread, and the read it came from (for dead letters)."""

    batch: DecodedBatch
    entries: list[list[Any]]
    future: Future[Learned] | None  # None: nothing to learn (every sample a duplicate), only to consume
    duplicates: int = 0
    entry_ids: list[bytes] = field(default_factory=list)  # the entries the batch finishes (a piece: not all)

    @property
    def samples(self) -> int:
        """The samples finishing it passes: learned or left out, rejected, or duplicates."""
        return len(self.batch.ids) + len(self.batch.rejects) + self.duplicates


class LearnerQueue:
    """The batches in flight, oldest first; ``submit`` queues one behind them."""

    def __init__(self, executor: LearnerThread) -> None:
        self._executor = executor
        self._jobs: deque[InFlight] = deque()

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[InFlight]:
        return iter(self._jobs)

    def submit(self, job: InFlight, learner: Learner) -> None:
        """Queue ``job`` (its future None) to be learned on the learner the batches ahead leave, else ``learner``."""
        after = next((ahead.future for ahead in reversed(self._jobs) if ahead.future is not None), None)
        if job.batch.ids:
            job.future = self._executor.submit(_learn, None if after is not None else learner, after, job.batch)
        self._jobs.append(job)

    def oldest(self) -> InFlight:
        """Take the oldest batch out (the caller finishes it: ``future.result()``)."""
        return self._jobs.popleft()

    def samples(self) -> int:
        return sum(job.samples for job in self._jobs)

    def rejects(self) -> int:
        return sum(len(job.batch.rejects) for job in self._jobs)

    def settle(self) -> None:
        """Wait until the learner thread has ended every batch (after an exception: before anything else)."""
        for job in self._jobs:
            if job.future is not None:
                job.future.exception()


def _learn(learner: Learner | None, after: Future[Learned] | None, batch: DecodedBatch) -> Learned:
    """In the learner thread: learn a batch on ``learner`` or the one ``after`` left, leaving out the samples
    that raise or diverge (``worker.isolate``: one state copy per batch, the undo)."""
    start = after.result().learner if after is not None else learner
    assert start is not None
    return learn_guarded(start, batch.images, batch.labels)


__all__ = ["InFlight", "LearnerQueue"]
