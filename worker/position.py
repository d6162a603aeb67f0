"""Where a worker stands in its model's stream: read, consumed, committed (one value, moved in one place)."""

from __future__ import annotations

from dataclasses import dataclass

from digitstream.contracts import SnapshotMeta


@dataclass
class Position:
    """The worker's progress in the stream; a snapshot commits it together with the learner's state.

    ``last_id`` is the last entry consumed (learned, skipped or dead-lettered); a restarted worker
    reads after it. ``read_id`` runs ahead of it by the batch being learned. The counters describe
    everything up to ``last_id``. Only ``read`` and ``consume`` move it, and both move by whole
    entries: a position inside an entry (an entry holding several samples) would be added here.
    """

    last_id: str = "0-0"
    read_id: str = "0-0"
    entries_consumed: int = 0
    samples_learned: int = 0  # learned up to last_id: what the status reports with last_id
    deadletter_count: int = 0
    samples_skipped: int = 0  # by the divergence guard
    duplicates_skipped: int = 0  # entries resent by their producer (worker.dedupe)

    @classmethod
    def of_snapshot(cls, meta: SnapshotMeta) -> Position:
        """The position a snapshot committed: reading continues right after it."""
        return cls(
            last_id=meta.last_id,
            read_id=meta.last_id,
            entries_consumed=meta.entries_consumed,
            samples_learned=meta.samples_learned,
            deadletter_count=meta.deadletter_count,
            samples_skipped=meta.samples_skipped,
            duplicates_skipped=meta.duplicates_skipped,
        )

    def read(self, last_id: bytes | None) -> None:
        """Entries up to ``last_id`` were read (they are consumed once their batch is finished)."""
        if last_id:
            self.read_id = last_id.decode()

    def consume(
        self, last_id: bytes | None, entries: int, samples_learned: int, dead: int, skipped: int, duplicates: int = 0
    ) -> None:
        """A finished batch of ``entries`` read entries up to ``last_id``: ``dead`` dead-lettered, ``skipped``
        samples skipped, ``duplicates`` skipped as such; ``samples_learned`` is the learner's count after it."""
        if last_id:
            self.last_id = last_id.decode()
        self.entries_consumed += entries
        self.samples_learned = samples_learned
        self.deadletter_count += dead
        self.samples_skipped += skipped
        self.duplicates_skipped += duplicates
