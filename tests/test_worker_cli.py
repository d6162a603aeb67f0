"""`digitstream worker`: settings from options and env vars, errors naming the setting, connections."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import redis
from click.testing import CliRunner
from redis.connection import SSLConnection

from digitstream.clients.embedded_redis import RedisServer
from digitstream.connections import worker_client
from digitstream.settings import load_settings, redact
from digitstream.store import read_snapshot
from digitstream.worker.cli import worker_command as command
from tests.worker_support import WorkerProcess, publish, wait_for, worker_command


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--batch-size", "0"], {}, "batch_size"),
        (["--learning-rate", "-1"], {}, "learning_rate"),
        (["--snapshot-interval", "0"], {}, "snapshot_interval"),
        (["--keep-versions", "0"], {}, "keep_versions"),
        (["--model", "has space"], {}, "model_name"),
        ([], {"DIGITSTREAM_REDIS_URL": "http://localhost:6379"}, "redis_url"),
        ([], {"DIGITSTREAM_LEASE_TTL": "0"}, "lease_ttl"),
        ([], {"DIGITSTREAM_RETENTION_MAX_LEN": "many"}, "retention_max_len"),
        (["--rule", "hebbian"], {}, "--rule"),
        (["--batch-size", "lots"], {}, "--batch-size"),
    ],
)
def test_an_invalid_setting_exits_2_with_a_message_naming_it(args: list[str], env: dict[str, str], named: str) -> None:
    result = CliRunner().invoke(command, args, env=env)
    assert result.exit_code == 2, result.output
    assert named in result.output


def test_the_installed_command_reports_a_bad_setting_without_a_traceback() -> None:
    result = subprocess.run(
        worker_command("--redis-url", "redis://127.0.0.1:1/0", "--lease-ttl", "0.01"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "lease_ttl" in result.stderr and "Traceback" not in result.stderr


def test_options_override_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITSTREAM_BATCH_SIZE", "5")
    monkeypatch.setenv("DIGITSTREAM_MODEL_NAME", "from-env")
    settings = load_settings(batch_size=7)
    assert settings.batch_size == 7 and settings.model_name == "from-env"


def test_a_url_with_username_and_password_connects(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", password="s3cret", appendonly=False) as server:
        url = f"redis://default:s3cret@127.0.0.1:{server.port}/0"
        settings = load_settings(redis_url=url, model_name="auth")
        client = worker_client(settings)
        publish(client, settings.keys.samples, np.zeros((3, 784), dtype=np.uint8), np.array([1, 2, 3]))
        result = CliRunner().invoke(command, ["--redis-url", url, "--model", "auth", "--burst"])
        snapshot = read_snapshot(client, settings.keys)
        client.close()
    assert result.exit_code == 0, result.output
    assert snapshot is not None and snapshot.samples_learned == 3


def test_a_wrong_password_fails_at_once_with_exit_1_and_no_password_shown(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", password="right", appendonly=False) as server:
        url = f"redis://:Not-The-Pa55word@127.0.0.1:{server.port}/0"
        result = CliRunner().invoke(command, ["--redis-url", url, "--burst"])
    assert result.exit_code == 1, result.output
    assert f"127.0.0.1:{server.port}" in result.output and "refused the credentials" in result.output
    assert "Not-The-Pa55word" not in result.output
    assert redact("redis://user:pw@host:1/0") == "redis://user:***@host:1/0"


def test_a_rediss_url_makes_a_tls_connection() -> None:
    client = worker_client(load_settings(redis_url="rediss://user:pw@redis.example:6380/2"))
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class is SSLConnection
    assert (kwargs["username"], kwargs["password"], kwargs["port"], kwargs["db"]) == ("user", "pw", 6380, 2)
    assert client.get_retry().get_retries() == 0, "the worker retries itself (see worker.retry)"  # type: ignore[union-attr]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_worker_after_a_final_snapshot(
    signum: int, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    settings = load_settings(redis_url=redis_url)
    images = np.random.default_rng(0).integers(0, 256, (500, 784)).astype(np.uint8)
    publish(redis_client, settings.keys.samples, images, np.arange(500) % 10)
    args = ("--snapshot-every", "1000000", "--snapshot-interval", "3600")  # no snapshot but the final one
    worker = WorkerProcess(tmp_path / "worker.log", *args, env={"DIGITSTREAM_REDIS_URL": redis_url})
    wait_for(
        lambda: (raw := redis_client.get(settings.keys.worker_status)) and json.loads(raw)["samples_learned"] == 500,
        timeout=30,
        what=f"the status of 500 samples learned\n{worker.log()}",
    )
    assert read_snapshot(redis_client, settings.keys) is None

    worker.process.send_signal(signum)

    assert worker.wait(30) == 0, worker.log()
    snapshot = read_snapshot(redis_client, settings.keys)
    assert snapshot is not None and snapshot.samples_learned == 500
    assert redis_client.get(settings.keys.lease) is None and redis_client.get(settings.keys.worker_status) is None


def test_json_log_format_writes_one_json_object_per_line(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    settings = load_settings(redis_url=redis_url)
    publish(redis_client, settings.keys.samples, np.zeros((20, 784), dtype=np.uint8), np.arange(20) % 10)
    env = {"DIGITSTREAM_REDIS_URL": redis_url}
    worker = WorkerProcess(tmp_path / "worker.log", "--burst", "--log-format", "json", env=env)
    assert worker.wait(60) == 0, worker.log_path.read_text()
    records = [json.loads(line) for line in worker.log_path.read_text().splitlines()]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["logger"] == "digitstream.worker" and "20 samples learned" in r["message"] for r in records)
