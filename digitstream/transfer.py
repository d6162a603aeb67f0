"""Export a model's snapshot to a model file, and import one as a new version (``digitstream models``, HTTP).

Export reads a kept snapshot (the latest by default) and keeps what belongs to the model: the
learner's arrays, its hyper-parameters, the samples it learned, its online metrics and rolling
window. It leaves out what belongs to the deployment: the stream position and the producers'
de-duplication marks.

Import writes the file's model as the next version of the target model through the worker's own
snapshot script (``store.write_snapshot``), so the lease fences it like any writer:

1. it takes the model's lease with a token of its own, *taking it over* from a running worker;
2. it reads the latest snapshot (after step 1, so no worker write can land after this read) and
   builds the new one: the file's learner, metrics and sample count, the latest snapshot's stream
   position (``last_id``, counts) and producer marks;
3. it writes it (the script checks the token), then releases the lease.

A worker running meanwhile finds its lease taken (at its next heartbeat, within a second) or
free with a newer snapshot than its own: either way it drops its unsaved state, claims the lease
again and continues from the latest snapshot, the imported one, re-learning from the stream what
it had learned since its last snapshot. Nothing in the stream is skipped or learned twice by the
imported model. A model that does not exist yet starts at the beginning of its stream.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np

from .connections import RedisClient
from .contracts import ContractError, SnapshotMeta
from .model_file import ROLLING_ARRAY, ModelFile, make_model_file
from .protocol import SCHEMA_VERSION, Keys
from .snapshot import Snapshot, SnapshotError
from .store import read_snapshot, write_snapshot

IMPORT_LEASE_TTL = 30.0  # seconds: if the importer dies holding the lease, a worker takes it back after this
DEPLOYMENT_ARRAYS = "producers:"  # arrays of the deployment, not of the model (the worker's de-duplication marks)

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class TransferError(LookupError):
    """Nothing to export (no such model or version), or a snapshot that cannot be read."""


def export_model(client: RedisClient, keys: Keys, version: int | None = None) -> ModelFile:
    """The model file of snapshot ``version`` of the model (the latest by default)."""
    try:
        snapshot = read_snapshot(client, keys, version)
    except SnapshotError as exc:
        raise TransferError(f"model {keys.model!r}: snapshot {version or 'latest'} is unreadable: {exc}") from None
    if snapshot is None:
        which = "no snapshot yet" if version is None else f"no kept version {version}"
        raise TransferError(f"model {keys.model!r} has {which} (see `digitstream versions`)")
    try:
        meta = snapshot.typed_meta()
    except SnapshotError as exc:
        raise TransferError(str(exc)) from None
    state = snapshot.learner_state()
    arrays = {name: a for name, a in snapshot.arrays.items() if not name.startswith(DEPLOYMENT_ARRAYS)}
    return make_model_file(
        {
            "model": meta.model or keys.model,
            "version": snapshot.version,
            "rule": state.params.rule,
            "params": state.params.to_json(),
            "samples_learned": meta.samples_learned,
            "created_at": meta.created_at,
            "exported_at": time.time(),
            "metrics": meta.metrics.to_json(),
            "learner": state.meta(),
        },
        arrays,
    )


def import_model(client: RedisClient, keys: Keys, model: ModelFile, *, keep: int) -> int:
    """Write ``model`` as the next version of the model of ``keys``; returns that version (module docstring)."""
    token = f"import:{uuid.uuid4().hex}"
    with _lease_taken(client, keys, token):
        try:
            latest = read_snapshot(client, keys)
            position = latest.typed_meta() if latest is not None else None
        except SnapshotError as exc:
            raise TransferError(f"model {keys.model!r}: its latest snapshot is unreadable ({exc}); "
                                "cannot tell where its stream was learned to") from None  # fmt: skip
        snapshot = _imported_snapshot(keys, model, latest, position, token)
        return write_snapshot(client, keys, snapshot, lease_token=token, keep=keep)


def _imported_snapshot(
    keys: Keys, model: ModelFile, latest: Snapshot | None, position: SnapshotMeta | None, token: str
) -> Snapshot:
    state = model.learner_state()
    meta: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "model": keys.model,
        "samples_learned": state.n_samples,
        "last_id": position.last_id if position else "0-0",
        "created_at": time.time(),
        "entries_consumed": position.entries_consumed if position else 0,
        "deadletter_count": position.deadletter_count if position else 0,
        "samples_skipped": position.samples_skipped if position else 0,
        "duplicates_skipped": position.duplicates_skipped if position else 0,
        "learner": state.meta(),
        "metrics": model.meta.get("metrics") or {},
        "worker_id": token,
        "stream": position.stream if position else keys.samples,
    }
    try:
        SnapshotMeta.from_json(meta)
    except ContractError as exc:
        raise TransferError(f"the file's metadata does not make a snapshot: {exc}") from None
    arrays: dict[str, np.ndarray] = dict(state.arrays)
    if ROLLING_ARRAY in model.arrays:
        arrays[ROLLING_ARRAY] = model.arrays[ROLLING_ARRAY]
    if latest is not None:
        arrays.update({k: a for k, a in latest.arrays.items() if k.startswith(DEPLOYMENT_ARRAYS)})
    return Snapshot(meta, arrays)


def import_summary(name: str, version: int, model: ModelFile) -> dict[str, Any]:
    """What an import reports: the new version, and where the model came from."""
    meta = model.meta
    source = {"model": model.name, "version": meta.get("version"), "sha256": meta["sha256"]}
    return {"model": name, "version": version, "rule": meta["rule"], "samples_learned": model.learner_state().n_samples,
            "from": source}  # fmt: skip


@contextlib.contextmanager
def _lease_taken(client: RedisClient, keys: Keys, token: str) -> Iterator[None]:
    """Hold the model's lease (taken over from any holder) for the duration, then release it if still ours."""
    client.set(keys.lease, token, px=round(IMPORT_LEASE_TTL * 1000))
    try:
        yield
    finally:
        client.eval(_RELEASE, 1, keys.lease, token)


__all__ = ["IMPORT_LEASE_TTL", "TransferError", "export_model", "import_model", "import_summary"]
