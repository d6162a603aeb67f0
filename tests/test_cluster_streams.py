"""Several models on one shared stream, on a real Redis Cluster: each learns it once, trims wait for the slowest.

The stream ``{shared}:samples`` and its readers live in the slot of ``{shared}``; each model's keys in
the slot of ``{model}``, another master for at least one of them. Each snapshot is then two scripts
(``digitstream.commit_script``): the model's commit in its slot, and the reader's position and the
trims in the stream's. Every script call on every master is watched (``tests.script_support``): each
touches only the keys it declares, in one slot. The cluster comes from tests/cluster_support.py.
"""

# ruff: noqa: F811  (the fixtures imported from tests.cluster_support are parameters here)

from __future__ import annotations

import numpy as np
import pytest
from redis.cluster import key_slot

from digitstream.clients.publisher import Publisher
from digitstream.commit_script import STREAM_SCRIPT, WRITE_SCRIPT_SHARDED
from digitstream.connections import client_client, worker_client
from digitstream.protocol import N_PIXELS
from digitstream.settings import Settings
from digitstream.worker.loop import Worker
from tests.cluster_support import LocalCluster, cluster, cluster_session  # noqa: F401
from tests.script_support import assert_declared, sha, watch_scripts
from tests.worker_support import latest, reference

pytestmark = pytest.mark.cluster

STREAM = "{shared}:samples"
MODELS = ("champion", "challenger", "third")


@pytest.fixture(scope="module")
def digits(mnist_train: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = mnist_train
    return images.reshape(len(labels), N_PIXELS)[:3000], labels[:3000].astype(np.int64)


def settings_of(cluster: LocalCluster, name: str) -> Settings:
    """Model ``name`` on the shared stream, keeping no learned entry (retention 0): trims go as far as readers let."""
    return Settings(redis_url=cluster.url, model_name=name, stream_key=STREAM, batch_size=100, snapshot_every=500,
                    retention_max_len=0)  # fmt: skip


def learn(cluster: LocalCluster, name: str) -> None:
    """A worker of model ``name`` learns what the stream holds for it, then stops (burst)."""
    settings = settings_of(cluster, name)
    client = worker_client(settings)
    try:
        Worker(settings, client).run(burst=True)
    finally:
        client.close()


def test_models_on_one_shared_stream_learn_it_once_each_and_trims_wait_for_the_slowest(
    cluster: LocalCluster, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = digits
    keys = {name: settings_of(cluster, name).keys for name in MODELS}
    assert cluster.master_of(keys["champion"].tag) is not cluster.master_of(STREAM), "a model on another master"
    client = client_client(settings_of(cluster, "champion"))
    masters = [node.client() for node in cluster.nodes if node.replication()["role"] == "master"]

    def publish(start: int, stop: int) -> list[bytes]:
        return Publisher(client, keys["champion"], batch_size=250).publish(images[start:stop], labels[start:stop])

    def stream_ids() -> list[bytes]:
        return [entry_id for entry_id, _ in client.xrange(STREAM)]

    try:
        with watch_scripts(*masters) as runs:
            for name in MODELS:
                learn(cluster, name)  # each registers as a reader (at 0-0) before anything is published
            ids = publish(0, 1000)
            learn(cluster, "third")  # 1,000, then stops
            ids += publish(1000, 2000)
            learn(cluster, "challenger")  # 2,000, then stops
            ids += publish(2000, 3000)
            learn(cluster, "champion")  # all 3,000
            assert stream_ids() == ids[1000:], "exactly what the slowest model has still to learn is left"
            learn(cluster, "third")
            assert stream_ids() == ids[2000:], "now the challenger is the slowest"
            learn(cluster, "challenger")
            assert stream_ids() == [], "every model has learned everything: all trimmed"

        expected, _ = reference(settings_of(cluster, "champion"), images, labels)
        for name in MODELS:
            snapshot = latest(client, keys[name])  # type: ignore[arg-type]
            assert snapshot.samples_learned == 3000
            assert np.array_equal(snapshot.learner().weights, expected.weights), f"{name} learned each sample once"
        readers = client.hgetall(keys["champion"].readers)
        assert readers == {name.encode(): ids[-1] for name in MODELS}

        assert_declared(runs)
        commits = [run for run in runs if run.sha == sha(WRITE_SCRIPT_SHARDED)]
        steps = [run for run in runs if run.sha == sha(STREAM_SCRIPT)]
        assert commits and len(steps) == len(commits)
        model_slots = {key_slot(keys[name].tag.encode()) for name in MODELS}
        assert {key_slot(run.declared[0]) for run in commits} == model_slots
        assert {key_slot(run.declared[0]) for run in steps} == {key_slot(STREAM.encode())}
        assert not any(STREAM.encode() in run.touched for run in commits), "the commit leaves the stream alone"
    finally:
        client.close()
        for master in masters:
            master.close()
