"""``digitstream models create | list | show | delete`` as subprocesses against a real redis-server,
with a real worker pool learning what the registry holds."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import redis

from digitstream.protocol import N_PIXELS, Keys
from digitstream.registry import Registry
from digitstream.settings import Settings
from digitstream.store import read_snapshot
from digitstream.worker.pool import WorkerPool
from tests.cli_support import assert_one_line_error, run_cli
from tests.worker_support import pool_running, publish, wait_for


def test_models_are_created_listed_shown_and_refused_with_clear_errors(
    redis_url: str, redis_client: redis.Redis
) -> None:
    created = run_cli("models", "create", "champion", "--redis-url", redis_url)
    assert created.returncode == 0 and "created model 'champion'" in created.stdout, created.stderr
    challenger = run_cli(
        "models", "create", "challenger", "--rule", "softmax", "--learning-rate", "0.1",
        "--stream", "champion:samples", "--redis-url", redis_url,
    )  # fmt: skip
    assert challenger.returncode == 0, challenger.stderr
    mlp = run_cli("models", "create", "deep", "--rule", "mlp", "--hidden", "64", "--redis-url", redis_url)
    assert mlp.returncode == 0, mlp.stderr

    listed = run_cli("models", "list", "--json", "--redis-url", redis_url)
    rows = {row["name"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert set(rows) == {"champion", "challenger", "deep"}
    assert rows["challenger"]["stream"] == "champion:samples" and rows["challenger"]["params"]["learning_rate"] == 0.1
    assert rows["deep"]["params"]["hidden"] == 64 and rows["champion"]["version"] is None
    table = run_cli("models", "list", "--redis-url", redis_url).stdout
    assert "champion" in table and "mlp" in table

    shown = json.loads(run_cli("models", "show", "deep", "--redis-url", redis_url).stdout)
    assert shown["params"]["rule"] == "mlp" and shown["worker"] is None

    assert_one_line_error(run_cli("models", "create", "champion", "--redis-url", redis_url), 2, "exists")
    assert_one_line_error(
        run_cli("models", "create", "x", "--hidden", "8", "--redis-url", redis_url), 2, "hidden", "mlp rule only"
    )
    assert_one_line_error(run_cli("models", "create", "bad{tag}", "--redis-url", redis_url), 2, "model name")
    assert_one_line_error(run_cli("models", "show", "nobody", "--redis-url", redis_url), 2, "nobody")
    assert_one_line_error(run_cli("models", "delete", "deep", "--redis-url", redis_url), 2, "--yes")
    assert Registry(redis_client).get("deep") is not None, "nothing deleted without --yes"


def test_a_model_created_from_the_cli_is_learned_by_a_running_pool_and_delete_removes_it_with_its_data(
    redis_url: str,
    redis_client: redis.Redis,
    make_settings: Callable[..., Settings],
    mnist_train: tuple[np.ndarray, np.ndarray],
) -> None:
    images, labels = mnist_train
    settings = make_settings(lease_ttl=1.0, snapshot_interval=0.1, block_ms=50)
    with pool_running(WorkerPool(settings, redis_client, ("*",), interval=0.1)) as pool:
        assert run_cli("models", "create", "fresh", "--redis-url", redis_url).returncode == 0
        keys = Keys.for_model("fresh")
        publish(redis_client, keys.samples, images[:500].reshape(500, N_PIXELS), labels[:500])
        wait_for(lambda: (s := read_snapshot(redis_client, keys)) and s.learner().n_samples == 500, 30, what="learning")
        assert "fresh" in pool.models

        deleted = run_cli("models", "delete", "fresh", "--yes", "--redis-url", redis_url)
        assert deleted.returncode == 0, deleted.stderr
        assert "deleted model 'fresh'" in deleted.stdout
        wait_for(lambda: "fresh" not in pool.models, 10, what="the pool letting go")
        assert redis_client.keys("{fresh}:*") == [], "every key of the model is gone"
        assert not redis_client.exists(keys.readers), "its own stream's readers go with the stream"
        assert Registry(redis_client).get("fresh") is None
    assert redis_client.keys("{fresh}:*") == [], "the stopped pool wrote nothing back"


def test_champion_and_challengers_learn_one_stream_side_by_side_and_compare_shows_them(
    redis_url: str,
    redis_client: redis.Redis,
    make_settings: Callable[..., Settings],
    mnist_train: tuple[np.ndarray, np.ndarray],
) -> None:
    images, labels = mnist_train
    shared = "digits:samples"
    for name, extra in (("champion", ()), ("seedling", ("--rule", "seed")), ("eager", ("--learning-rate", "0.2"))):
        done = run_cli("models", "create", name, "--stream", shared, *extra, "--redis-url", redis_url)
        assert done.returncode == 0, done.stderr
    publish(redis_client, shared, images[:3000].reshape(3000, N_PIXELS), labels[:3000])
    settings = make_settings(snapshot_interval=0.1, block_ms=50)
    with pool_running(WorkerPool(settings, redis_client, ("*",), interval=0.1)):

        def all_learned() -> bool:
            snapshots = [
                read_snapshot(redis_client, Keys.for_model(m, shared)) for m in ("champion", "seedling", "eager")
            ]
            return all(s is not None and s.learner().n_samples == 3000 for s in snapshots)

        wait_for(all_learned, 60, what="three models learning one stream")
    assert redis_client.xlen(shared) == 3000, "each model reads the shared stream; none consumes it for the others"

    rows = {
        row["model"]: row
        for row in map(json.loads, run_cli("models", "compare", "champion", "seedling", "eager", "--json",
                                           "--redis-url", redis_url).stdout.splitlines())
    }  # fmt: skip
    assert list(rows) == ["champion", "seedling", "eager"]
    assert all(row["metrics"]["samples"] == 3000 and row["metrics"]["learning_curve"] for row in rows.values())
    assert rows["champion"]["metrics"]["prequential_accuracy"] > rows["seedling"]["metrics"]["prequential_accuracy"]
    table = run_cli("models", "compare", "champion", "seedling", "eager", "--redis-url", redis_url)
    assert table.returncode == 0 and "learning curves" in table.stdout and table.stdout.count("3,000") >= 3
    assert_one_line_error(run_cli("models", "compare", "champion", "nobody", "--redis-url", redis_url), 2, "nobody")
