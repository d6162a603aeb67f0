"""Where a worker stands in its model's stream: read, consumed, committed (one value, moved in one place)."""

from __future__ import annotations

from dataclasses import dataclass

from digitstream.contracts import SnapshotMeta, samples_in_entries, samples_per_entry


@dataclass
class Position:
    """The worker's progress in the stream; a snapshot commits it together with the learner's state.

    ``last_id`` is the last entry consumed (learned, skipped or dead-lettered); a restarted worker
    reads after it. ``read_id`` runs ahead of it by the batch being learned. The counters describe
    everything up to ``last_id`` and ``offset``. Only ``read`` and ``consume`` move it.

    ``offset`` is how many samples of the entry after ``last_id`` (a packed entry) were consumed
    too: a snapshot may fall inside a packed entry (``worker.pieces``), and a restarted worker then
    learns that entry from its sample ``offset`` on. Snapshots older than packed entries have none: 0.
    """

    last_id: str = "0-0"
    read_id: str = "0-0"
    entries_consumed: int = 0
    samples_learned: int = 0  # learned up to last_id: what the status reports with last_id
    deadletter_count: int = 0
    samples_skipped: int = 0  # by the divergence guard
    duplicates_skipped: int = 0  # samples resent by their producer (worker.dedupe)
    offset: int = 0  # samples of the entry after last_id consumed too (inside a packed entry)

    @property
    def samples_passed(self) -> int:
        """Samples consumed so far: learned, dead-lettered, skipped or duplicates (a whole bad entry counts 1)."""
        return self.samples_learned + self.deadletter_count + self.samples_skipped + self.duplicates_skipped

    def samples_behind(self, entries: int) -> int:
        """The samples in ``entries`` entries after ``last_id`` (``contracts.samples_in_entries``).

        >>> Position(entries_consumed=2, samples_learned=2048 + 100, offset=100).samples_behind(3)
        2972
        """
        return samples_in_entries(entries, self.entries_consumed, self.samples_passed, self.offset)

    @property
    def samples_per_entry(self) -> float:
        """The mean number of samples in the entries consumed up to ``last_id`` (1 for classic entries)."""
        return samples_per_entry(self.entries_consumed, self.samples_passed, self.offset)

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
            offset=meta.offset,
        )

    def read(self, last_id: bytes | None) -> None:
        """Entries up to ``last_id`` were read (they are consumed once their batch is finished)."""
        if last_id:
            self.read_id = last_id.decode()

    def consume(
        self, last_id: bytes | None, entries: int, samples_learned: int, dead: int, skipped: int, duplicates: int = 0,
        partial: int = 0,
    ) -> None:  # fmt: skip
        """A finished batch that finishes ``entries`` read entries up to ``last_id`` (None: none) and ``partial``
        samples of the next: ``dead`` dead-lettered, ``skipped`` samples skipped, ``duplicates`` skipped as
        such; ``samples_learned`` is the learner's count after it."""
        if last_id:
            self.last_id = last_id.decode()
        self.offset = partial
        self.entries_consumed += entries
        self.samples_learned = samples_learned
        self.deadletter_count += dead
        self.samples_skipped += skipped
        self.duplicates_skipped += duplicates
