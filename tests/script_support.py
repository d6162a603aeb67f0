"""Which keys each Lua script touches, against the keys it declared: watched on a real redis-server with MONITOR.

Redis does not enforce that a script touches only the keys it declares (a cluster refuses a key of
another slot, or another node, but accepts an undeclared one in the same slot). So the tests watch:
``watch_scripts(*nodes)`` records, on each node, every script call (``EVAL``/``EVALSHA`` with its
declared ``KEYS``) and every command its Lua code ran (MONITOR shows them as the ``lua`` client), and
asks the server which arguments of each command are keys (``COMMAND GETKEYS``).

    with watch_scripts(client) as runs:
        ...  # anything that runs scripts
    assert_declared(runs)  # each touched only keys it declared, all in one slot
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis
from redis.cluster import key_slot

_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("a"): b"\a", ord("b"): b"\b"}


@dataclass
class ScriptRun:
    """One script call on one node: its source's SHA1, declared keys, and the commands its Lua code ran."""

    sha: str
    declared: list[bytes]
    commands: list[list[bytes]] = field(default_factory=list)
    touched: set[bytes] = field(default_factory=set)  # keys of those commands (COMMAND GETKEYS)

    def ran(self, name: str) -> list[list[bytes]]:
        """The commands named ``name`` (any case) it ran."""
        return [c for c in self.commands if c[0].upper() == name.upper().encode()]

    @property
    def undeclared(self) -> set[bytes]:
        return self.touched - set(self.declared)


def sha(script: str) -> str:
    """The SHA1 Redis names ``script`` by (what EVALSHA sends; EVAL's source is hashed the same way)."""
    return hashlib.sha1(script.encode()).hexdigest()


def parse_monitor_line(line: bytes) -> tuple[str, list[bytes]]:
    """(client, arguments) of one MONITOR line: ``1.2 [0 127.0.0.1:5] "SET" "k" "v"``; client ``lua`` for scripts."""
    start, end = line.index(b"["), line.index(b"] ")
    client = line[start + 1 : end].split(b" ", 1)[1].decode()
    return client, _unquote(line[end + 2 :])


def _unquote(text: bytes) -> list[bytes]:
    """Arguments as MONITOR quotes them (``sdscatrepr``): ``"..."`` with ``\\\\ \\" \\n \\xHH`` escapes."""
    args: list[bytes] = []
    i = 0
    while i < len(text):
        if text[i] != ord('"'):
            i += 1
            continue
        out = bytearray()
        i += 1
        while text[i] != ord('"'):
            if text[i] == ord("\\"):
                kind = text[i + 1]
                if kind == ord("x"):
                    out.append(int(text[i + 2 : i + 4], 16))
                    i += 4
                    continue
                out += _ESCAPES.get(kind, bytes([kind]))
                i += 2
                continue
            out.append(text[i])
            i += 1
        args.append(bytes(out))
        i += 1
    return args


class _Monitor:
    """MONITOR on one node, read by a thread until the stop marker comes through."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.lines: list[tuple[str, list[bytes]]] = []
        self.marker = f"watch-scripts-end-{uuid.uuid4().hex}".encode()
        pool = client.connection_pool  # the same server, without a read timeout: a node may be quiet for long
        options = {**pool.connection_kwargs, "socket_timeout": None}
        self._watcher = redis.Redis(
            connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **options)
        )
        self._monitor = self._watcher.monitor()
        self._monitor.__enter__()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            line = self._monitor.connection.read_response()
            client, args = parse_monitor_line(line)  # type: ignore[arg-type]
            if args[:2] == [b"ECHO", self.marker]:
                return
            self.lines.append((client, args))

    def stop(self) -> None:
        self.client.echo(self.marker)
        self._thread.join(60)
        self._monitor.__exit__(None, None, None)
        self._watcher.close()
        assert not self._thread.is_alive(), "the MONITOR stream never showed the end marker"

    def runs(self) -> list[ScriptRun]:
        runs: list[ScriptRun] = []
        for client, args in self.lines:
            name = args[0].upper()
            if client != "lua" and name in (b"EVAL", b"EVALSHA", b"EVAL_RO", b"EVALSHA_RO"):
                source = args[1].decode()
                digest = source.lower() if name.startswith(b"EVALSHA") else sha(source)
                runs.append(ScriptRun(digest, args[3 : 3 + int(args[2])]))
            elif client == "lua" and runs:  # the script runs atomically: its commands follow its call
                runs[-1].commands.append(args)
        keyless: dict[bytes, bool] = {}
        for run in runs:
            for command in run.commands:
                run.touched |= _keys_of(self.client, command, keyless)
        return runs


def _keys_of(client: redis.Redis, command: list[bytes], keyless: dict[bytes, bool]) -> set[bytes]:
    """The key arguments of ``command``, as the server says (``COMMAND GETKEYS``).

    SPUBLISH's channel counts as a key (it is routed like one; Redis 7.0 does not call it one). A
    command Redis has no key positions for (TIME, PUBLISH) has none; any other refusal is raised.
    """
    name = command[0].lower()
    if name == b"spublish":
        return {command[1]}
    try:
        return {k.encode() if isinstance(k, str) else k for k in client.command_getkeys(*command)}
    except redis.ResponseError:
        if name not in keyless:
            info = client.execute_command("COMMAND", "INFO", name)[name.decode()]
            keyless[name] = info["first_key_pos"] == 0 and "movablekeys" not in info["flags"]
            keyless[name] = keyless[name] and not info.get("key_specifications")
        if keyless[name]:
            return set()
        raise


def assert_declared(runs: list[ScriptRun]) -> None:
    """Each run touched only keys it declared, and declared keys of one cluster slot."""
    assert runs, "no script ran"
    for run in runs:
        assert not run.undeclared, f"script {run.sha} touched undeclared keys {sorted(run.undeclared)}"
        assert len({key_slot(key) for key in run.declared}) <= 1, f"script {run.sha} declared keys of several slots"


@contextlib.contextmanager
def watch_scripts(*nodes: redis.Redis) -> Iterator[list[ScriptRun]]:
    """Every script call on ``nodes`` (plain clients of single nodes) while the block runs, filled in at its end."""
    monitors = [_Monitor(node) for node in nodes]
    runs: list[ScriptRun] = []
    try:
        yield runs
    finally:
        for monitor in monitors:
            monitor.stop()
    for monitor in monitors:
        runs += monitor.runs()
