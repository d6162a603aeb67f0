"""Every Lua script touches only the keys it declares, all in one slot (issue 15), watched on a real Redis.

Redis itself does not refuse an undeclared key in the declared slot, so ``tests.script_support``
watches with MONITOR every command each script's Lua code runs and asks the server which of its
arguments are keys (``COMMAND GETKEYS``). The snapshot script is watched while it collects old
versions (kept history, a pin) and trims, on the model's own stream and on a shared one; then every
script the publisher, the worker and the service run, as they run them. The same watch runs on a
real cluster in ``tests/test_cluster_streams.py``.
"""

# ruff: noqa: F811  (the fixtures imported from tests.service_support are parameters here)

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import redis

from digitstream.clients.producer import APPEND_SCRIPT
from digitstream.clients.publisher import Publisher
from digitstream.commit_script import STREAM_SCRIPT, WRITE_SCRIPT
from digitstream.learner import DeltaRuleLearner, HyperParameters
from digitstream.protocol import N_PIXELS, Keys, deadletter_fields
from digitstream.snapshot import snapshot_of
from digitstream.store import list_versions, write_snapshot
from service.idempotency import _PUBLISH_ONCE
from service.learning import BACKLOG_SCRIPT
from tests.script_support import assert_declared, sha, watch_scripts
from tests.service_support import LiveServer, make_app  # noqa: F401
from tests.worker_support import latest, publish, wait_for

TOKEN = "writer"


@pytest.fixture(scope="module")
def digits(mnist_train: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = mnist_train
    return images.reshape(len(labels), N_PIXELS)[:2000], labels[:2000].astype(np.int64)


def a_snapshot(last_id: str) -> Any:
    learner = DeltaRuleLearner(HyperParameters.for_rule("softmax"))
    return snapshot_of(learner, model="m", samples_learned=0, last_id=last_id)


def history(client: redis.Redis, keys: Keys, count: int) -> None:
    """``count`` versions written every 20 s until now (back in time), the lease held."""
    pipe = client.pipeline(transaction=False)
    seconds, micros = client.time()  # type: ignore[misc]
    now = seconds * 1000 + micros // 1000
    for version in range(1, count + 1):
        pipe.hset(keys.snapshot(version), "version", version)
        pipe.zadd(keys.snapshot_versions, {str(version): version})
        pipe.zadd(keys.snapshot_times, {str(version): now - (count - version + 1) * 20_000})
    pipe.set(keys.snapshot_latest, count)
    pipe.set(keys.lease, TOKEN)
    pipe.execute()


def test_the_watch_sees_a_key_built_inside_a_script(redis_client: redis.Redis) -> None:
    """What Redis lets through on one node and in one cluster slot, the watch reports."""
    built_inside = "redis.call('SET', KEYS[1], 1); redis.call('SET', KEYS[1] .. ':copy', 2); return redis.call('TIME')"
    with watch_scripts(redis_client) as runs:
        redis_client.eval(built_inside, 1, "{m}:a")
    [run] = runs
    assert run.declared == [b"{m}:a"] and run.undeclared == {b"{m}:a:copy"}


@pytest.mark.parametrize("stream", [None, "{shared}:samples"], ids=["own stream", "shared stream"])
def test_the_snapshot_script_touches_only_the_keys_it_declares(redis_client: redis.Redis, stream: str | None) -> None:
    keys = Keys.for_model("m", stream)
    history(redis_client, keys, 400)  # over two hours of versions: most go at the next write
    redis_client.set(keys.pinned, 3)
    ids = [redis_client.xadd(keys.samples, {"label": str(i)}, id=f"{1000 + i}-0") for i in range(5)]
    redis_client.hset(keys.readers, "other", "1002-0")  # it has learned up to 1002-0
    dead = deadletter_fields(b"1000-0", {b"label": b"x"}, "label: bad")

    with watch_scripts(redis_client) as runs:
        version = write_snapshot(
            redis_client, keys, a_snapshot("1004-0"), lease_token=TOKEN, keep=5, parent=400, deadletters=[dead],
            trim_minid="1004-0", reader="m", keep_minutely=10, keep_hourly=2,
        )  # fmt: skip

    assert_declared(runs)
    kept = list_versions(redis_client, keys)
    collected = [v for v in range(1, 401) if v not in kept]
    assert version == 401 and 3 in kept and len(collected) > 300
    assert [e[0] for e in redis_client.xrange(keys.samples)] == ids[3:], "trimmed up to the other reader"
    assert redis_client.hget(keys.readers, "m") == b"1004-0"
    [commit, *step] = runs
    assert commit.sha == sha(WRITE_SCRIPT)
    assert {c[1] for c in commit.ran("DEL")} == {keys.snapshot(v).encode() for v in [401, *collected]}
    if stream is None:
        assert not step, "one script: the stream is in the model's slot"
        assert {keys.samples.encode(), keys.readers.encode()} <= commit.touched
    else:
        assert keys.samples.encode() not in commit.touched and keys.readers.encode() not in commit.touched
        [stream_step] = step
        assert stream_step.sha == sha(STREAM_SCRIPT)
        assert stream_step.touched == {keys.samples.encode(), keys.readers.encode()}


def test_versions_changed_since_the_writer_read_them_are_declared_on_the_retry(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version added behind the writer's back (not through the script) would go undeclared: the script refuses
    (``UNDECLARED``, nothing written) and the writer reads the versions again."""
    keys = Keys.for_model("m")
    history(redis_client, keys, 3)
    read = redis_client.zrange
    sneaked: list[bool] = []

    def read_then_sneak(*args: Any, **kwargs: Any) -> Any:  # fault injection: right after the writer's read
        answer = read(*args, **kwargs)
        if not sneaked:
            sneaked.append(True)
            redis_client.zadd(keys.snapshot_versions, {"0": 0})
            redis_client.hset(keys.snapshot(0), "version", 0)
        return answer

    monkeypatch.setattr(redis_client, "zrange", read_then_sneak)
    with watch_scripts(redis_client) as runs:
        version = write_snapshot(redis_client, keys, a_snapshot("0-0"), lease_token=TOKEN, keep=2, parent=3)

    assert version == 4 and list_versions(redis_client, keys) == [3, 4]
    assert not redis_client.exists(keys.snapshot(0))
    assert_declared(runs)
    assert len(runs) == 2 and not runs[0].ran("HSET"), "the first run refused before writing anything"


def test_every_script_the_publisher_and_the_workers_run_declares_its_keys(
    make_worker: Callable[..., Any], redis_client: redis.Redis, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = digits
    streams = {"own": None, "shared-1": "{shared}:samples", "shared-2": "{shared}:samples"}

    def worker(name: str) -> Any:
        return make_worker(model_name=name, stream_key=streams[name], batch_size=100, snapshot_every=200,
                           retention_max_len=0, keep_versions=2, keep_minutely=1, keep_hourly=1)  # fmt: skip

    with watch_scripts(redis_client) as runs:
        worker("shared-1").run(burst=True)  # both readers registered before anything is published
        worker("shared-2").run(burst=True)
        for name in ("own", "shared-1"):
            Publisher(redis_client, worker(name).keys, batch_size=250).publish(images[:1000], labels[:1000])
        for name in streams:
            learner = worker(name)
            learner.run(burst=True)
            assert latest(redis_client, learner.keys).samples_learned == 1000
            assert list_versions(redis_client, learner.keys)[-1] >= 5
    assert_declared(runs)
    ran = {run.sha for run in runs}
    assert {sha(APPEND_SCRIPT), sha(WRITE_SCRIPT), sha(STREAM_SCRIPT)} <= ran
    assert redis_client.xlen("{shared}:samples") == 0, "both readers have learned it all: trimmed"


def test_every_script_the_service_runs_declares_its_keys(
    make_app: Callable[..., LiveServer], redis_client: redis.Redis, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = digits
    keys = Keys.for_model()
    with watch_scripts(redis_client) as runs:
        redis_client.set(keys.lease, TOKEN)
        last = publish(redis_client, keys.samples, images[:10], labels[:10])[-1].decode()
        write_snapshot(redis_client, keys, a_snapshot(last), lease_token=TOKEN, keep=3)
        live = make_app(poll_interval=0.2)
        wait_for(lambda: (r := live.get("/model")).status_code == 200 and r.json()["learning"]["backlog"] == 0,
                 timeout=30, what="the backlog measured")  # fmt: skip
        sample = {"pixels": images[0].tolist(), "label": 3}
        for _ in range(2):
            answer = live.post("/samples", json={"samples": [sample]}, headers={"Idempotency-Key": "once"})
            assert answer.status_code == 200, answer.text
        prediction = live.predict(images[1])
        assert (
            live.post("/feedback", json={"prediction_id": prediction["prediction_id"], "label": 1}).status_code == 200
        )
        time.sleep(0.3)  # the next sync measures again
    assert_declared(runs)
    assert {sha(BACKLOG_SCRIPT), sha(_PUBLISH_ONCE)} <= {run.sha for run in runs}
