"""The Redis server's configuration for a deployment: one ACL user per role, and redis.conf.

Every role connects as its own user with only the commands and keys it needs (the key patterns come
from :class:`digitstream.protocol.Keys`, so a change of the key layout is made here and nowhere else):

- ``worker``: reads the stream, writes snapshots (one Lua script), dead letters, its lease and status;
- ``api``: reads snapshots, the pin and the worker status, XADDs samples (feedback, ``POST /samples``),
  keeps and reads predictions, sets and clears the pin; it cannot delete or overwrite a snapshot;
- ``publisher``: XADDs samples, nothing else;
- ``admin``: everything (the operator's ``digitstream status``, resets, ``redis-cli``).

On a Redis Cluster (``--cluster``) the roles may also ask for the slot map and the command table
(``CLUSTER SLOTS``/``SHARDS``, ``COMMAND``), which cluster clients need, and a ``replication`` user
(``PSYNC``, ``REPLCONF``, ``PING``: nothing else) is what each replica authenticates to its master as
(``masteruser``/``masterauth`` in redis.conf). Its password is derived from the admin password (an
HMAC), so every node's configuration agrees and the job can be run again without a new secret; it is
the one password redis.conf holds in clear, as Redis needs it to authenticate.

The ``health`` user (no password) may only PING, for health checks. The ``default`` user, which every
connection is until it authenticates, is disabled: unauthenticated clients can run nothing. (It keeps
every right, unusable while disabled, because Redis 7.0 replays the append-only file's MULTI/EXEC blocks
with the default user's rights: restricted, it would refuse them and lose data at every restart.)
Passwords are stored as SHA-256 hashes, and reach redis-server through the ACL file, never its command
line. In docker-compose.yml a
one-shot ``redis-config`` service runs this module before Redis starts::

    python -m digitstream.redis_config --out DIR    # DIR/redis.conf and DIR/users.acl, from the environment
    python -m digitstream.redis_config --out DIR --cluster   # the same for the nodes of a Redis Cluster

It reads ``REDIS_<ROLE>_PASSWORD`` for each role (refusing a missing, short, non-URL-safe, repeated or
``change-me`` placeholder password), ``REDIS_MAXMEMORY``, ``REDIS_APPENDFSYNC``,
``REDIS_CLUSTER_NODE_TIMEOUT`` (milliseconds, with ``--cluster``) and the key layout from the
``DIGITSTREAM_*`` settings. Without ``--out`` it prints both files.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import re
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .migration import LegacyKeys
from .protocol import Keys
from .registry import EVENTS_CHANNEL as REGISTRY_EVENTS
from .registry import TAG as REGISTRY_TAG

ROLES = ("admin", "worker", "api", "publisher")
PLACEHOLDER_PREFIX = "change-me"  # the passwords of .env.example start with it: refused
MIN_PASSWORD_LENGTH = 16
_URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")
# Every command a connection needs besides AUTH: SELECT for a database other than 0, PING to check it.
# (Not CLIENT SETINFO, which redis-py sends on connect and lets fail: Redis 7.0 does not know it, and
# an ACL file naming an unknown command is refused whole.)
_CONNECTION = "+ping +hello +select +reset +quit +client|setname +client|getname +client|id"
_SCRIPTS = "+eval +evalsha +script|load +script|exists"
_SUBSCRIBE = "+subscribe +unsubscribe +ssubscribe +sunsubscribe"  # sharded pub/sub on a cluster
# What a cluster client (redis-py's RedisCluster) asks any node besides the roles' own commands: the slot
# map (at start and after a failover) and the command table, from which it finds the keys of a command.
_CLUSTER_CLIENT = "+cluster|slots +cluster|shards +command"
# What a replica sends its master (Redis's documentation of ``masteruser``).
_REPLICATION = "+psync +replconf +ping"
REPLICATION_USER = "replication"
DEFAULT_NODE_TIMEOUT_MS = 5000
# The conf keeps a stream entry (MAX_ENTRY_BYTES, 16 KiB) and the largest snapshot array of any learner
# far inside one bulk string, and stops a single oversized write (the default allows 512 MB).
PROTO_MAX_BULK_LEN = "16mb"


class RedisConfigError(ValueError):
    """A password or setting that must not reach redis-server; the message says which and why."""


@dataclass(frozen=True)
class Selector:
    """Commands allowed on keys and channels; a command runs if one selector allows it with all its keys."""

    commands: str
    keys: tuple[str, ...] = ()  # ACL key patterns, with ~ (read+write), %R~ (read) or %W~ (write)
    channels: tuple[str, ...] = ()

    def rule(self) -> str:
        channels = [f"&{c}" for c in self.channels]
        return " ".join([*self.keys, *channels, self.commands])


def role_selectors(keys: Keys, *, cluster: bool = False) -> dict[str, list[Selector]]:
    """The permissions of each role user for one model's keys (admin is ``+@all`` on everything).

    With ``cluster``, each role's first selector also allows what a cluster client needs
    (``_CLUSTER_CLIENT``: the slot map and the command table, no key).

    Every pattern is built from a ``Keys`` name (exact keys where there is one key, ``*`` only for the
    snapshot versions and the predictions), so a new layout, e.g. with a ``{model}`` hash tag for
    Redis Cluster, changes the rules with it.
    """
    snapshots = f"{keys.snapshot_prefix}*"  # latest, versions and every snapshot hash
    predictions = keys.prediction("*")
    connection = f"{_CONNECTION} {_CLUSTER_CLIENT}" if cluster else _CONNECTION
    worker_keys = (
        keys.samples, keys.deadletter, snapshots, keys.lease, keys.worker_status, keys.readers, keys.worker_restarts,
    )  # fmt: skip
    return {
        "worker": [
            Selector(
                f"{connection} {_SCRIPTS} +xread +xrange +xrevrange +xlen +xinfo|stream +xtrim +xadd +type +exists "
                "+get +set +del +pexpire +hget +hgetall +hset +hincrby +zadd +zrange +zcard +zscore +zrem "
                "+zremrangebyrank +publish +spublish +time +info",
                keys=(*(f"~{key}" for key in worker_keys), f"%R~{keys.pinned}"),
                channels=(keys.snapshot_events,),
            ),
            # The snapshot script declares the pin among its keys (it never collects the pinned version), and
            # Redis wants write access to every key a script declares: this selector gives it for the script
            # call alone. Inside, each command is checked again, and only reading the pin is allowed above.
            Selector(_SCRIPTS, keys=(*(f"~{key}" for key in worker_keys), f"~{keys.pinned}")),
            # The registry: its model registered on first use; a pool's membership and the models it learns.
            Selector(
                f"{_SCRIPTS} +get +hget +hgetall +hexists +hlen +hset +hdel +incr +time +zadd +zrem +zrangebyscore "
                "+zremrangebyscore +publish",
                keys=(f"~{REGISTRY_TAG}:*",),
                channels=(REGISTRY_EVENTS,),
            ),
            # Whether snapshots of the layout before 0.3 wait to be migrated (digitstream.migration).
            Selector("+exists", keys=(f"%R~{LegacyKeys(keys.model).snapshot_latest}",)),
        ],
        "api": [
            # The registry, read: GET /models and the models served under /models/{name}.
            Selector("+hget +hscan", keys=(f"%R~{REGISTRY_TAG}:models",)),
            # Read the served model: latest + pin + worker status + lease in one MGET, snapshot hashes, versions;
            # the snapshot events (sharded pub/sub on a cluster).
            Selector(
                f"{connection} +get +mget +hget +hgetall +zrange +zscore +info {_SUBSCRIBE}",
                keys=(f"%R~{snapshots}", f"%R~{keys.worker_status}", f"%R~{keys.pinned}", f"%R~{keys.lease}"),
                channels=(keys.snapshot_events,),
            ),
            # The backlog (service.learning): XINFO STREAM's entries-added, in one script; read-only commands
            # only (the pattern is ~ because a script's keys count as written). XINFO STREAM shows the first
            # and last entries, no more: the API cannot range over the stream (no XRANGE, so the Redis 6.2
            # fallback count is refused and the backlog is reported as unknown there).
            Selector(f"{_SCRIPTS} +xinfo|stream", keys=(f"~{keys.samples}",)),
            # Feedback and POST /samples: XADD only, in MULTI/EXEC (all or none).
            Selector("+xadd +multi +exec +discard", keys=(f"%W~{keys.samples}",)),
            # Pin and unpin: the only key it may delete.
            Selector("+set +del", keys=(f"~{keys.pinned}",)),
            # Predictions kept for feedback: written by a script in chunks, read back (once) by id.
            Selector(f"+get +set +getdel {_SCRIPTS}", keys=(f"~{predictions}",)),
            # Idempotency-Key answers (one hash per period) and the samples they appended, by one script.
            Selector(
                f"{_SCRIPTS} +hget +hset +hincrby +pexpireat +xadd",
                keys=(f"~{keys.idempotency(0).rsplit(':', 1)[0]}:*", f"%W~{keys.samples}"),
            ),
        ],
        "publisher": [
            Selector(f"{connection} +xadd +multi +exec +discard", keys=(f"%W~{keys.samples}",)),
            # The fenced append (clients.producer): the fence hash and the stream, by one script; reading
            # back the entries of a batch whose answer was lost.
            Selector(
                f"{_SCRIPTS} +hget +hmget +hset +pexpire +xadd +xrange",
                keys=(f"~{keys.producer('*')}", f"~{keys.samples}"),
            ),
        ],
    }


def password_hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def check_passwords(passwords: Mapping[str, str | None]) -> dict[str, str]:
    """Every role's password, checked; RedisConfigError naming each bad one (the value is never shown)."""
    problems = []
    for role in ROLES:
        value = passwords.get(role)
        variable = f"REDIS_{role.upper()}_PASSWORD"
        if not value:
            problems.append(f"{variable} is not set")
        elif value.lower().startswith(PLACEHOLDER_PREFIX):
            problems.append(f"{variable} is still the placeholder of .env.example")
        elif len(value) < MIN_PASSWORD_LENGTH:
            problems.append(f"{variable} is shorter than {MIN_PASSWORD_LENGTH} characters")
        elif not _URL_SAFE.match(value):
            problems.append(f"{variable} has characters other than letters, digits and - _ . ~ (it goes in a URL)")
    given = [v for v in passwords.values() if v]
    if not problems and len(set(given)) != len(given):
        problems.append("the role passwords must differ from each other")
    if problems:
        raise RedisConfigError(
            "refusing to configure Redis: " + "; ".join(problems) + " (make each with: openssl rand -hex 24)"
        )
    return {role: str(passwords[role]) for role in ROLES}


def replication_password(admin_password: str) -> str:
    """The ``replication`` user's password: a function of the admin password alone (same on every node)."""
    return hmac.new(admin_password.encode(), b"digitstream redis replication", hashlib.sha256).hexdigest()


def acl_file(keys: Keys, passwords: Mapping[str, str | None], *, cluster: bool = False) -> str:
    """The ACL file: ``default`` disabled, ``health`` limited to PING, admin, and one user per role.

    With ``cluster``: the roles' cluster-client commands, and the ``replication`` user.
    """
    checked = check_passwords(passwords)
    unknowable = password_hash(secrets.token_hex(32))  # should default ever be switched on: no way in
    lines = [  # an ACL file has no comments: redis.conf says where it comes from
        f"user default off #{unknowable} ~* &* +@all",
        "user health on nopass resetkeys resetchannels -@all +ping",
        f"user admin on #{password_hash(checked['admin'])} ~* &* +@all",
    ]
    if cluster:
        secret = password_hash(replication_password(checked["admin"]))
        lines.append(f"user {REPLICATION_USER} on #{secret} resetkeys resetchannels -@all {_REPLICATION}")
    for role, selectors in role_selectors(keys, cluster=cluster).items():
        root, *others = selectors
        rules = [root.rule(), *(f"({s.rule()})" for s in others)]
        lines.append(f"user {role} on #{password_hash(checked[role])} resetkeys resetchannels -@all {' '.join(rules)}")
    return "\n".join(lines) + "\n"


_MEMORY = re.compile(r"^\d+(b|k|kb|m|mb|g|gb)?$", re.IGNORECASE)


@dataclass(frozen=True)
class ClusterConf:
    """What redis.conf adds for a node of a Redis Cluster."""

    admin_password: str = field(repr=False)  # the replication user's password is derived from it
    node_timeout_ms: int = DEFAULT_NODE_TIMEOUT_MS

    def lines(self) -> list[str]:
        if not 1000 <= self.node_timeout_ms <= 600_000:
            raise RedisConfigError(
                f"REDIS_CLUSTER_NODE_TIMEOUT={self.node_timeout_ms}: expected milliseconds from 1000 to 600000"
            )
        return [
            "# A node of a Redis Cluster: its state (nodes.conf) beside the append-only file, in the data directory.",
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            f"cluster-node-timeout {self.node_timeout_ms}",
            "# Clients are sent to nodes by name (each node's --cluster-announce-hostname), not by address:",
            "# a container started again may get another address, never another name.",
            "cluster-preferred-endpoint-type hostname",
            "# A replica authenticates to its master as the replication user (PSYNC, REPLCONF, PING only).",
            f"masteruser {REPLICATION_USER}",
            f"masterauth {replication_password(self.admin_password)}",
        ]


def redis_conf(
    acl_path: str,
    *,
    maxmemory: str = "512mb",
    appendfsync: str = "everysec",
    data_dir: str = "/data",
    cluster: ClusterConf | None = None,
) -> str:
    """redis.conf for the bundled Redis: AOF persistence, no eviction, a bounded bulk length, the ACL file.

    With ``cluster``, for a node of a Redis Cluster (``ClusterConf``).
    """
    if not _MEMORY.match(maxmemory) or maxmemory.strip("0bkmgBKMG") == "":
        raise RedisConfigError(f"REDIS_MAXMEMORY={maxmemory!r}: expected a size such as 512mb or 2gb")
    if appendfsync not in ("always", "everysec"):
        raise RedisConfigError(f"REDIS_APPENDFSYNC={appendfsync!r}: expected always (no loss) or everysec")
    return "\n".join(
        [
            "# Generated by `python -m digitstream.redis_config` (digitstream/redis_config.py), as is the",
            "# ACL file named below: do not edit, change the environment (docs/deploy.md) and restart.",
            "bind * -::*",
            "port 6379",
            "# Not needed: the default user may only PING, every other user needs its password.",
            "protected-mode no",
            f"dir {data_dir}",
            "appendonly yes",
            f"appendfsync {appendfsync}",
            "# The stream and the snapshots must never be evicted: past maxmemory, writes fail instead.",
            f"maxmemory {maxmemory}",
            "maxmemory-policy noeviction",
            f"proto-max-bulk-len {PROTO_MAX_BULK_LEN}",
            f"aclfile {acl_path}",
            *(cluster.lines() if cluster is not None else []),
            "",
        ]
    )


def _keys_from_environment(environ: Mapping[str, str]) -> Keys:
    model = environ.get("DIGITSTREAM_MODEL_NAME") or "digitstream"
    if not re.match(r"^[A-Za-z0-9_.:-]{1,64}$", model):
        raise RedisConfigError(f"DIGITSTREAM_MODEL_NAME={model!r} is not a valid model name")
    return Keys.for_model(model, environ.get("DIGITSTREAM_STREAM_KEY") or None,
                          environ.get("DIGITSTREAM_DEADLETTER_KEY") or None)  # fmt: skip


def _cluster_node(environ: Mapping[str, str], admin_password: str) -> ClusterConf:
    raw = environ.get("REDIS_CLUSTER_NODE_TIMEOUT") or str(DEFAULT_NODE_TIMEOUT_MS)
    if not raw.isdigit():
        raise RedisConfigError(f"REDIS_CLUSTER_NODE_TIMEOUT={raw!r}: expected milliseconds, e.g. 5000")
    return ClusterConf(admin_password, int(raw))


def main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(prog="python -m digitstream.redis_config", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write redis.conf and users.acl here (default: print them)")
    parser.add_argument("--acl-path", default=None,
                        help="where redis-server finds users.acl [default: OUT/users.acl]")  # fmt: skip
    parser.add_argument("--cluster", action="store_true",
                        help="for the nodes of a Redis Cluster (cluster mode, the replication user)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        keys = _keys_from_environment(environ)
        passwords = {role: environ.get(f"REDIS_{role.upper()}_PASSWORD") for role in ROLES}
        acl = acl_file(keys, passwords, cluster=args.cluster)
        acl_path = args.acl_path or str((args.out or Path(".")) / "users.acl")
        node = _cluster_node(environ, str(passwords["admin"])) if args.cluster else None
        conf = redis_conf(acl_path, maxmemory=environ.get("REDIS_MAXMEMORY") or "512mb",
                          appendfsync=environ.get("REDIS_APPENDFSYNC") or "everysec", cluster=node)  # fmt: skip
    except RedisConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(f"# --- redis.conf\n{conf}# --- users.acl\n{acl}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in (("users.acl", acl), ("redis.conf", conf)):
        partial = args.out / f".{name}.part"
        partial.write_text(text)
        partial.chmod(0o644)  # redis-server runs as another user; the ACL holds hashes only
        partial.replace(args.out / name)
    users = ", ".join(["health", *ROLES, *([REPLICATION_USER] if args.cluster else [])])
    print(f"wrote {args.out / 'redis.conf'} and {args.out / 'users.acl'} (users: {users})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
