"""``digitstream models export | import`` against a real Redis (and a running worker), and the same over HTTP."""

# ruff: noqa: F811  (the fixtures imported from tests.service_support are parameters here)

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis

from digitstream.learner import DeltaRuleLearner, learner_from_state
from digitstream.model_file import model_file_bytes, read_model_file
from digitstream.registry import Registry
from digitstream.settings import Settings
from digitstream.store import list_versions, read_snapshot
from digitstream.transfer import export_model
from tests.cli_support import assert_one_line_error, cli_env, run_cli
from tests.service_support import LiveServer, make_app, snapshot_writer, train, trained, write  # noqa: F401
from tests.worker_support import publish, running, wait_for

OCTET = {"content-type": "application/octet-stream"}


@pytest.fixture
def env(redis_url: str) -> dict[str, str]:
    return cli_env(DIGITSTREAM_REDIS_URL=redis_url)


def test_export_then_import_as_another_model_copies_it_bit_for_bit(
    redis_client: redis.Redis, make_settings: Callable[..., Settings], trained: DeltaRuleLearner,
    env: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    source = make_settings(model_name="champion")
    snapshot_writer(redis_client, source)(trained)
    path = tmp_path / "champion.npz"
    done = run_cli("models", "export", "champion", str(path), env=env)
    assert done.returncode == 0, done.stderr
    assert "exported champion version 1 (softmax, 3,000 samples learned)" in done.stdout
    with np.load(path, allow_pickle=False) as plain:  # any numpy reads it, without pickle
        meta = json.loads(plain["meta"].tobytes())
    assert meta["model"] == "champion" and meta["version"] == 1 and meta["samples_learned"] == 3000
    assert meta["rule"] == "softmax" and meta["params"]["rule"] == "softmax" and len(meta["sha256"]) == 64
    assert set(meta["arrays"]) >= {"wt", "bias", "acc_wt", "acc_bias", "norm"}

    done = run_cli("models", "import", str(path), "--as", "challenger", "--json", env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["model"] == "challenger" and summary["version"] == 1 and summary["from"]["sha256"] == meta["sha256"]
    registered = Registry(redis_client).get("challenger")  # registered, so worker pools and the API find it
    assert registered is not None and registered.params == trained.params
    copy = read_snapshot(redis_client, make_settings(model_name="challenger").keys)
    assert copy is not None and copy.samples_learned == 3000 and copy.last_id == "0-0"  # its own stream, from the start
    original = trained.state().arrays
    assert all(np.array_equal(copy.arrays[name], original[name]) for name in original)

    done = run_cli("models", "import", str(path), env=env)  # into the model named in the file: a new version
    assert done.returncode == 0 and "as champion version 2" in done.stdout, done.stderr
    assert list_versions(redis_client, source.keys) == [1, 2]


def test_bad_files_and_unknown_models_exit_2_and_change_nothing(
    redis_client: redis.Redis, make_settings: Callable[..., Settings], trained: DeltaRuleLearner,
    env: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    settings = make_settings()
    snapshot_writer(redis_client, settings)(trained)
    good = model_file_bytes(export_model(redis_client, settings.keys))
    files = {"truncated.npz": good[: len(good) // 2], "text.npz": b"hello", "flipped.npz": good[:-30] + bytes(30)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        done = run_cli("models", "import", str(tmp_path / name), env=env)
        assert_one_line_error(done, 2, name, "not a readable .npz")
    assert_one_line_error(run_cli("models", "import", str(tmp_path / "missing.npz"), env=env), 2, "cannot read")
    assert_one_line_error(run_cli("models", "import", str(tmp_path / "text.npz"), "--as", "a/b", env=env), 2)
    assert_one_line_error(run_cli("models", "export", "nobody", str(tmp_path / "x.npz"), env=env), 2, "no snapshot")
    done = run_cli("models", "export", "digitstream", str(tmp_path / "x.npz"), "--version", "9", env=env)
    assert_one_line_error(done, 2, "no kept version 9")
    assert list_versions(redis_client, settings.keys) == [1]


def test_a_running_worker_continues_from_the_imported_version_without_skipping_or_relearning(
    make_worker: Callable[..., object], redis_client: redis.Redis, make_settings: Callable[..., Settings],
    mnist_train: tuple[np.ndarray, np.ndarray], env: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    images, labels = mnist_train[0][:2000], mnist_train[1][:2000].astype(np.int64)
    imported = train(*mnist_train, 50)
    snapshot_writer(redis_client, make_settings(model_name="elsewhere"))(imported)
    path = tmp_path / "elsewhere.npz"
    assert run_cli("models", "export", "elsewhere", str(path), env=env).returncode == 0

    worker = make_worker(lease_ttl=0.6, snapshot_interval=0.1, block_ms=50)
    keys = worker.keys  # type: ignore[attr-defined]
    publish(redis_client, keys.samples, images[:1000], labels[:1000])
    with running(worker):
        wait_for(lambda: (s := read_snapshot(redis_client, keys)) and s.samples_learned == 1000, timeout=20)
        done = run_cli("models", "import", str(path), "--as", keys.model, "--json", env=env)
        assert done.returncode == 0, done.stderr
        version = json.loads(done.stdout)["version"]
        at_import = read_snapshot(redis_client, keys, version)
        assert at_import is not None and at_import.samples_learned == 50
        consumed = at_import.typed_meta().entries_consumed  # the stream position it took from the latest snapshot
        publish(redis_client, keys.samples, images[1000:], labels[1000:])
        expected = 50 + 2000 - consumed
        what = f"the worker to learn the rest of the stream on top of the import ({expected} samples)"
        wait_for(lambda: (s := read_snapshot(redis_client, keys)) and s.samples_learned == expected, 20, what=what)
    final = read_snapshot(redis_client, keys)
    assert final is not None and final.version > version
    reference = learner_from_state(imported.state())
    reference.learn_many(images[consumed:], labels[consumed:])
    assert np.array_equal(final.learner().weights, reference.weights)


def test_export_and_import_over_http_with_the_key(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner,
    mnist_train: tuple[np.ndarray, np.ndarray], mnist_test: tuple[np.ndarray, np.ndarray],
) -> None:  # fmt: skip
    write(train(*mnist_train, 50))
    live = make_app(api_key="k" * 32)
    live.wait_for_version(1)
    key = {"X-API-Key": "k" * 32}
    assert live.get("/models/digitstream/export").status_code == 401
    assert live.get("/models/digitstream/export", headers={"X-API-Key": "wrong"}).status_code == 403
    assert live.post("/models/digitstream/import", content=b"x", headers=OCTET).status_code == 401
    assert live.get("/models/other/export", headers=key).status_code == 404
    assert live.get("/models/digitstream/export?version=5", headers=key).status_code == 404

    exported = live.get("/models/digitstream/export", headers=key)
    assert exported.status_code == 200 and exported.headers["content-type"] == "application/octet-stream"
    assert read_model_file(exported.content).meta["samples_learned"] == 50

    better = snapshot_bytes(trained)
    answer = live.post("/models/digitstream/import", content=better, headers={**key, **OCTET})
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == 2 and answer.json()["samples_learned"] == 3000
    live.wait_for_version(2)
    images = mnist_test[0][:50]
    assert [live.predict(image)["digit"] for image in images] == trained.predict_many(images).tolist()

    refused = live.post("/models/digitstream/import", content=better[:-100], headers={**key, **OCTET})
    assert refused.status_code == 422 and "not a readable .npz" in refused.json()["detail"]
    assert live.post("/models/digitstream/import", content=better, headers={**key, "content-type": "text/plain"}
                     ).status_code == 415  # fmt: skip
    assert live.post("/models/other/import", content=better, headers={**key, **OCTET}).status_code == 404
    too_large = live.post("/models/digitstream/import", content=bytes(65 * 1024 * 1024), headers={**key, **OCTET})
    assert too_large.status_code == 413
    assert live.get("/model/versions").json()["latest"] == 2  # nothing else was written


def snapshot_bytes(learner: DeltaRuleLearner) -> bytes:
    """A model file of ``learner``, as an export from another deployment would be."""
    from digitstream.model_file import make_model_file

    state = learner.state()
    meta = {"model": "elsewhere", "version": 7, "rule": state.params.rule, "params": state.params.to_json(),
            "samples_learned": state.n_samples, "created_at": None, "exported_at": 1.7e9, "metrics": {},
            "learner": state.meta()}  # fmt: skip
    return model_file_bytes(make_model_file(meta, state.arrays))
