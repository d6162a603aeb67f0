"""``digitstream models migrate``: a deployment written with the key layout before 0.3 (``M:...``) moves
to the hash-tagged one (``{M}:...``) and the worker carries on exactly where it stopped."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import redis

from digitstream.clients.publisher import Publisher
from digitstream.migration import MigrationError
from digitstream.protocol import N_PIXELS, Keys
from digitstream.registry import Registry
from digitstream.settings import Settings
from digitstream.store import read_snapshot
from digitstream.worker.loop import Worker
from tests.cli_support import assert_one_line_error, run_cli
from tests.worker_support import publish, reference, state_difference


class OldKeys(Keys):
    """The layout before 0.3: the same names without the hash tag."""

    @property
    def tag(self) -> str:
        return self.model


class OldLayoutSettings(Settings):
    @property
    def keys(self) -> Keys:
        return OldKeys(self.model_name, f"{self.model_name}:samples", f"{self.model_name}:deadletter")


@pytest.fixture
def digits(mnist_train: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = mnist_train
    return images.reshape(len(labels), N_PIXELS)[:2000], labels[:2000].astype(np.int64)


def old_deployment(client: redis.Redis, settings: OldLayoutSettings, images: np.ndarray, labels: np.ndarray) -> None:
    """What a 0.2 worker left: snapshots, a stream, dead letters and a publisher's fence, under M:..."""
    keys = settings.keys
    Publisher(client, keys, producer_id="tablet-7").publish(images[:1000], labels[:1000])
    client.xadd(keys.samples, {"pixels": b"[1,2]", "label": b"7"})  # a bad entry: a dead letter
    Worker(settings, client).run(burst=True)
    assert (
        client.exists(
            "digitstream:snapshot:latest", "digitstream:deadletter", "{digitstream:samples}:producer:tablet-7"
        )
        == 3
    )


def test_a_deployment_in_the_old_layout_is_refused_then_migrated_and_learning_resumes_exactly(
    redis_url: str,
    redis_client: redis.Redis,
    make_settings: Callable[..., Settings],
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    images, labels = digits
    old = OldLayoutSettings(redis_url=redis_url, snapshot_interval=0.05)
    old_deployment(redis_client, old, images, labels)
    settings = make_settings(snapshot_interval=0.05)

    with pytest.raises(MigrationError, match="models migrate --model digitstream"):
        Worker(settings, redis_client).run(burst=True)  # never a silent fresh start beside the old data

    done = run_cli("models", "migrate", "--redis-url", redis_url)
    assert done.returncode == 0, done.stderr
    assert "digitstream:samples -> {digitstream}:samples" in done.stdout
    assert "{digitstream:samples}:producer:tablet-7 -> {digitstream}:producer:tablet-7" in done.stdout
    assert not [k for k in redis_client.keys("digitstream:*")], "nothing left in the old layout"
    assert Registry(redis_client).get("digitstream") is not None, "the model is registered"

    keys = settings.keys
    assert redis_client.xlen(keys.deadletter) == 1 and redis_client.xlen(keys.samples) == 1001
    publish(redis_client, keys.samples, images[1000:1500], labels[1000:1500])
    Worker(settings, redis_client).run(burst=True)
    snapshot = read_snapshot(redis_client, keys)
    assert snapshot is not None
    expected, _ = reference(settings, images[:1500], labels[:1500])
    assert snapshot.learner().n_samples == 1500 and state_difference(snapshot.learner(), expected) < 1e-9
    assert redis_client.exists(keys.producer("tablet-7")), "the publisher's fence moved with its stream"

    again = run_cli("models", "migrate", "--redis-url", redis_url)
    assert again.returncode == 0 and "0 keys moved" in again.stdout


def test_migrate_refuses_while_an_old_worker_runs_or_when_both_layouts_hold_data(
    redis_url: str, redis_client: redis.Redis, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = digits
    old_deployment(redis_client, OldLayoutSettings(redis_url=redis_url), images, labels)
    redis_client.set("digitstream:worker:lease", "old-worker", px=60_000)
    assert_one_line_error(run_cli("models", "migrate", "--redis-url", redis_url), 1, "still runs", "stop it first")
    redis_client.delete("digitstream:worker:lease")
    redis_client.set("{digitstream}:snapshot:latest", 1)
    assert_one_line_error(run_cli("models", "migrate", "--redis-url", redis_url), 1, "both layouts")
    assert redis_client.exists("digitstream:snapshot:latest"), "nothing moved"
