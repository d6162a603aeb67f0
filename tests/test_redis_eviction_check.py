"""The worker and the service warn at start when Redis could evict the stream or the snapshots.

Only ``maxmemory-policy noeviction`` is silent (docs/deploy.md): ``allkeys-*`` can evict samples and
the model itself; ``volatile-*`` keeps both (they have no TTL) but can drop keys with a TTL early.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from digitstream.clients.embedded_redis import RedisServer
from digitstream.redis_checks import eviction_risk
from digitstream.redis_config import redis_conf
from digitstream.settings import load_settings
from tests.cli_support import cli_env, run_cli
from tests.service_support import LiveServer


@pytest.fixture(scope="module")
def evicting_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    extra = ("--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru")
    with RedisServer(tmp_path_factory.mktemp("evicting"), extra_args=extra) as server:
        yield server


def test_the_policies_that_could_evict_our_keys_are_named_with_what_they_could_take() -> None:
    assert eviction_risk("noeviction") is None
    for policy in ("allkeys-lru", "allkeys-lfu", "allkeys-random"):
        assert "samples stream" in eviction_risk(policy)  # type: ignore[operator]
    for policy in ("volatile-lru", "volatile-ttl", "volatile-random", "volatile-lfu"):
        warning = eviction_risk(policy)
        assert warning is not None and "stream and the snapshots stay" in warning and "learned twice" in warning


def test_the_worker_warns_at_start(evicting_redis: RedisServer) -> None:
    done = run_cli("worker", "--burst", env=cli_env(DIGITSTREAM_REDIS_URL=evicting_redis.url))
    assert done.returncode == 0, done.stderr
    assert "maxmemory-policy allkeys-lru can evict any key" in done.stderr


def test_the_worker_is_silent_with_noeviction(redis_url: str) -> None:
    done = run_cli("worker", "--burst", env=cli_env(DIGITSTREAM_REDIS_URL=redis_url))
    assert done.returncode == 0, done.stderr
    assert "maxmemory-policy" not in done.stderr


def test_the_service_warns_at_start(evicting_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    server = LiveServer(load_settings(redis_url=evicting_redis.url)).start()
    try:
        assert server.get("/healthz").status_code == 200
    finally:
        server.stop()
    assert any("maxmemory-policy allkeys-lru can evict any key" in r.getMessage() for r in caplog.records)


def test_compose_runs_redis_with_noeviction(tmp_path: Path) -> None:
    assert "maxmemory-policy noeviction" in redis_conf(str(tmp_path / "users.acl")).splitlines()
