"""One Redis user per role (digitstream/redis_config.py), enforced by a real redis-server >= 7.

Each role does its whole job as its own user (a real worker learns, a real service serves, pins and
takes feedback, the publisher publishes) without one refused command, and nothing beyond it: the API
user cannot delete or overwrite a snapshot, read or trim the stream; the publisher can only XADD; an
unauthenticated client can run nothing, the health user only PING. And what they wrote survives a
restart of Redis from its append-only file. Redis 6 has no selectors, so these tests need Redis 7
(scripts/test installs Debian's redis-server; they skip, saying so, where none is found).
"""



from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from digitstream.clients.embedded_redis import BINARY_ENV_VAR, RedisServer
from digitstream.clients.publisher import Publisher
from digitstream.connections import worker_client
from digitstream.learner import DeltaRuleLearner, HyperParameters
from digitstream.protocol import Keys, encode_sample
from digitstream.redis_config import ROLES, RedisConfigError, acl_file, check_passwords, redis_conf
from digitstream.service.learning import BACKLOG_SCRIPT
from digitstream.settings import Settings, load_settings
from digitstream.snapshot import snapshot_of
from digitstream.store import write_snapshot
from digitstream.worker.loop import Worker
from tests.service_support import LiveServer

KEYS = Keys.for_model("digitstream")


def redis_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    found = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(part) for part in found.groups()) if found else (0,)


@pytest.fixture(scope="module")
def redis7() -> Path:
    """A redis-server binary of version 7 or newer (ACL selectors)."""
    candidates = [os.environ.get(BINARY_ENV_VAR), shutil.which("redis-server"), "/usr/bin/redis-server"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and redis_version(candidate) >= (7,):
            return Path(candidate)
    pytest.skip("needs redis-server >= 7 for ACL selectors (Debian bookworm's redis-server package has it)")


@dataclass
class AclRedis:
    server: RedisServer
    passwords: dict[str, str]

    def url(self, role: str) -> str:
        return f"redis://{role}:{self.passwords[role]}@127.0.0.1:{self.server.port}/0"

    def client(self, role: str) -> redis.Redis:
        return redis.Redis.from_url(self.url(role))


@pytest.fixture(scope="module")
def acl_redis(redis7: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    """redis-server started on the generated ACL file, as docker-compose.yml starts it."""
    directory = tmp_path_factory.mktemp("acl-redis")
    passwords = {role: secrets.token_hex(16) for role in ROLES}
    (directory / "users.acl").write_text(acl_file(KEYS, passwords))
    conf = redis_conf(str(directory / "users.acl"), data_dir=str(directory))
    # The generated conf as it is, except where the test server listens (the harness's own port, loopback).
    conf = "\n".join(line for line in conf.splitlines() if not line.startswith(("bind", "port")))
    (directory / "redis.conf").write_text(conf + "\n")
    server = RedisServer(directory, binary=redis7, username="health", password="-",
                         extra_args=("--include", str(directory / "redis.conf")))  # fmt: skip
    with server:
        yield AclRedis(server, passwords)


@pytest.fixture
def clean(acl_redis: AclRedis) -> Iterator[AclRedis]:
    admin = acl_redis.client("admin")
    admin.flushall()
    admin.acl_log_reset()
    yield acl_redis
    admin.close()


def refused(call: Callable[[], Any]) -> bool:
    try:
        call()
    except redis.exceptions.NoPermissionError:
        return True
    except redis.ResponseError as exc:  # inside a script, the refusal comes back as the script's error
        return bool(re.search(r"NOPERM|no permissions|user executing the script can't", str(exc)))
    return False


def a_snapshot(admin: redis.Redis) -> int:
    """Version 1 of a model, written as the worker writes it (the admin holds the lease here)."""
    model = DeltaRuleLearner(HyperParameters.for_rule("softmax"))
    admin.set(KEYS.lease, "writer")
    return write_snapshot(admin, KEYS, snapshot_of(model, model="digitstream", samples_learned=0), lease_token="writer",
                          keep=10)  # fmt: skip


# -- what each user must not do -----------------------------------------------------------------------------


def test_an_unauthenticated_client_can_run_nothing_and_the_health_user_only_ping(clean: AclRedis) -> None:
    anonymous = redis.Redis(port=clean.server.port)
    health = redis.Redis(port=clean.server.port, username="health", password="anything")
    assert health.ping()
    calls = [
        *(lambda c=c: c.get(KEYS.snapshot_latest) for c in (anonymous, health)),
        *(lambda c=c: c.xadd(KEYS.samples, {"a": "b"}) for c in (anonymous, health)),
        *(lambda c=c: c.keys("*") for c in (anonymous, health)),
        *(lambda c=c: c.config_get("*") for c in (anonymous, health)),
        lambda: anonymous.ping(),
    ]
    for call in calls:
        with pytest.raises((redis.exceptions.NoPermissionError, redis.exceptions.AuthenticationError)):
            call()
    anonymous.close()
    health.close()


def test_the_api_user_cannot_delete_or_overwrite_a_snapshot_nor_read_or_trim_the_stream(clean: AclRedis) -> None:
    admin = clean.client("admin")
    version = a_snapshot(admin)
    admin.xadd(KEYS.samples, encode_sample(np.zeros(784, np.uint8), 3))  # type: ignore[arg-type]
    api = clean.client("api")
    forbidden = {
        "DEL a snapshot": lambda: api.delete(KEYS.snapshot(version)),
        "HSET a snapshot": lambda: api.hset(KEYS.snapshot(version), "meta", "{}"),
        "SET latest": lambda: api.set(KEYS.snapshot_latest, 99),
        "GETDEL latest": lambda: api.getdel(KEYS.snapshot_latest),
        "ZREM a version": lambda: api.zrem(KEYS.snapshot_versions, version),
        "PUBLISH a fake snapshot event": lambda: api.publish(KEYS.snapshot_events, '{"version": 99}'),
        "XRANGE the stream": lambda: api.xrange(KEYS.samples),
        "XTRIM the stream": lambda: api.xtrim(KEYS.samples, maxlen=0),
        "DEL the stream": lambda: api.delete(KEYS.samples),
        "XADD a dead letter": lambda: api.xadd(KEYS.deadletter, {"reason": "x"}),
        "SET the worker lease": lambda: api.set(KEYS.lease, "api"),
        "a script deleting a snapshot": lambda: api.eval(
            "return redis.call('DEL', KEYS[1])", 1, KEYS.snapshot(version)
        ),
        "a script hiding the DEL": lambda: api.eval(f"return redis.call('DEL', '{KEYS.snapshot(version)}')", 0),
        "KEYS": lambda: api.keys("*"),
        "FLUSHALL": lambda: api.flushall(),
        "CONFIG SET": lambda: api.config_set("maxmemory-policy", "allkeys-lru"),
        "ACL SETUSER": lambda: api.acl_setuser("api", enabled=True, commands=["+@all"]),
        "another model's snapshot": lambda: api.get("{other}:snapshot:latest"),
    }
    allowed = [name for name, call in forbidden.items() if not refused(call)]
    assert allowed == [], f"the API user may: {allowed}"
    # Everything is still there, and what the API may do, it can.
    assert admin.exists(KEYS.snapshot(version)) and int(admin.get(KEYS.snapshot_latest)) == version  # type: ignore[arg-type]
    assert admin.xlen(KEYS.samples) == 1
    assert int(api.get(KEYS.snapshot_latest)) == version  # type: ignore[arg-type]
    assert api.hget(KEYS.snapshot(version), "meta")
    api.set(KEYS.pinned, version)
    api.delete(KEYS.pinned)
    assert api.xadd(KEYS.samples, encode_sample(np.zeros(784, np.uint8), 4))  # type: ignore[arg-type]
    # The backlog counted in the stream (service.learning), and the lease: whether a worker is learning.
    assert api.eval(BACKLOG_SCRIPT, 1, KEYS.samples, 0, "(0-0", 10) == [2, 0]  # type: ignore[no-untyped-call]
    assert api.mget(KEYS.snapshot_latest, KEYS.pinned, KEYS.worker_status, KEYS.lease)[0] is not None
    api.close()
    admin.close()


def test_the_worker_user_cannot_touch_the_pin_predictions_or_the_server(clean: AclRedis) -> None:
    worker = clean.client("worker")
    set_pin = "return redis.call('SET', KEYS[1], '1')"  # the script call is allowed with the pin declared; SET is not
    for call in (lambda: worker.set(KEYS.pinned, 1), lambda: worker.eval(set_pin, 1, KEYS.pinned),
                 lambda: worker.delete(KEYS.pinned), lambda: worker.get(KEYS.prediction("0" * 32)),
                 lambda: worker.flushall(), lambda: worker.config_set("appendonly", "no"),
                 lambda: worker.get("{other}:snapshot:latest"), lambda: worker.acl_list()):  # fmt: skip
        assert refused(call)
    worker.close()


def test_the_publisher_user_can_only_add_samples(clean: AclRedis) -> None:
    """It appends, and reads back the ids of a batch whose answer was lost (clients.producer); nothing else."""
    publisher = clean.client("publisher")
    assert publisher.xadd(KEYS.samples, encode_sample(np.zeros(784, np.uint8), 1))  # type: ignore[arg-type]
    assert len(publisher.xrange(KEYS.samples)) == 1
    for call in (lambda: publisher.xread({KEYS.samples: "0-0"}), lambda: publisher.xtrim(KEYS.samples, maxlen=0),
                 lambda: publisher.get(KEYS.snapshot_latest), lambda: publisher.xadd(KEYS.deadletter, {"a": "b"}),
                 lambda: publisher.delete(KEYS.samples)):  # fmt: skip
        assert refused(call)
    publisher.close()


def test_passwords_are_checked_before_any_reaches_redis() -> None:
    good = {role: secrets.token_hex(16) for role in ROLES}
    assert check_passwords(good) == good
    cases = [
        ({**good, "api": "change-me-to-a-long-random-string"}, "REDIS_API_PASSWORD is still the placeholder"),
        ({**good, "worker": None}, "REDIS_WORKER_PASSWORD is not set"),
        ({**good, "admin": "short"}, "REDIS_ADMIN_PASSWORD is shorter"),
        ({**good, "publisher": "a" * 20 + "@:/"}, "REDIS_PUBLISHER_PASSWORD has characters"),
        ({**good, "api": good["worker"]}, "must differ"),
    ]
    for bad, says in cases:
        with pytest.raises(RedisConfigError, match=says):
            check_passwords(bad)
    with pytest.raises(RedisConfigError) as raised:
        acl_file(KEYS, {**good, "admin": "change-me-" + good["admin"]})
    assert good["admin"] not in str(raised.value), "a password must never be printed"


# -- every role does its job as its own user ----------------------------------------------------------------


def role_settings(acl: AclRedis, role: str) -> Settings:
    return load_settings(redis_url=acl.url(role), snapshot_interval=0.2)


def test_worker_service_and_publisher_do_their_jobs_as_their_own_users_with_no_refusal(
    clean: AclRedis, mnist_train: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_train
    publisher_client = clean.client("publisher")
    Publisher(publisher_client, KEYS).publish(images[:2000], labels[:2000])
    publisher_client.close()

    worker_settings = role_settings(clean, "worker")
    client = worker_client(worker_settings)  # the worker's own factory, as `digitstream worker` makes it
    worker = Worker(worker_settings, client)
    thread = threading.Thread(target=worker.run, name="acl-worker", daemon=True)
    thread.start()
    server = LiveServer(role_settings(clean, "api")).start()
    try:
        served = server.get("/model")
        for _ in range(200):
            if served.status_code == 200 and served.json()["samples_learned"] == 2000:
                break
            threading.Event().wait(0.05)
            served = server.get("/model")
        assert served.status_code == 200 and served.json()["samples_learned"] == 2000, served.text
        version = served.json()["version"]

        answer = server.predict(images[2000])
        feedback = server.post("/feedback", json={"prediction_id": answer["prediction_id"], "label": int(labels[2000])})
        assert feedback.status_code == 200, feedback.text
        replay = server.post("/feedback", json={"prediction_id": answer["prediction_id"], "label": 0})
        assert replay.status_code == 409, replay.text  # one label each: the take script runs as the API user
        sample = {"pixels": images[2001].tolist(), "label": int(labels[2001])}
        posted = server.post("/samples", json={"samples": [sample]})
        assert posted.status_code == 200, posted.text
        assert server.post("/model/pin", json={"version": version}).json()["version"] == version
        assert server.post("/model/unpin").status_code == 200

        for _ in range(400):
            model = server.get("/model").json()
            if model["samples_learned"] == 2002:
                break
            threading.Event().wait(0.05)
        assert model["samples_learned"] == 2002, model
    finally:
        server.stop()
        worker.stop()
        thread.join(30)
        client.close()
    admin = clean.client("admin")
    refusals = admin.acl_log()
    assert refusals == [], f"commands refused to a role during its normal work: {refusals}"
    # Everything the roles wrote (scripts and MULTI/EXEC blocks among it) comes back from the append-only
    # file: with the ACL file in force, Redis replays it whole.
    before = (admin.get(KEYS.snapshot_latest), admin.xlen(KEYS.samples), admin.zrange(KEYS.snapshot_versions, 0, -1))
    admin.close()
    clean.server.stop()
    clean.server.start()
    admin = clean.client("admin")
    after = (admin.get(KEYS.snapshot_latest), admin.xlen(KEYS.samples), admin.zrange(KEYS.snapshot_versions, 0, -1))
    admin.close()
    assert after == before and before[1] == 2002, (before, after)
