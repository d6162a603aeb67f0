"""One settings object for every role, from ``DIGITSTREAM_*`` env vars and CLI overrides.

Built by :func:`load_settings` at each entry point and passed in; never created at import time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .learner import HyperParameters, Rule, Schedule
from .logs import LogFormat
from .protocol import Keys

ENV_PREFIX = "DIGITSTREAM_"


class SettingsError(ValueError):
    """Invalid configuration; the message names each bad setting and its env var."""


class Settings(BaseSettings):
    """Configuration shared by the worker, the service and the clients."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    # -- Redis and keys -------------------------------------------------------------------
    redis_url: SecretStr = Field(
        SecretStr("redis://localhost:6379/0"),
        description="redis:// or rediss:// (TLS) URL, user:password@ if needed; redis+cluster:// or rediss+cluster:// "
        "for a Redis Cluster (any node, or several comma-separated)",
    )
    model_name: str = Field(
        "digitstream", pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="the model: the prefix of all its Redis keys"
    )
    stream_key: str | None = Field(None, description="samples stream (default: {MODEL}:samples)")
    deadletter_key: str | None = Field(None, description="dead-letter stream (default: {MODEL}:deadletter)")
    redis_connect_timeout: float = Field(5.0, gt=0, le=300, description="seconds to open a Redis connection")
    redis_timeout: float = Field(
        30.0, gt=0, le=3600, description="seconds a Redis command may take (workers and clients; beyond blocking reads)"
    )
    service_redis_timeout: float = Field(
        2.0, gt=0, le=60, description="seconds the API waits for Redis before serving from memory"
    )

    # -- learner --------------------------------------------------------------------------
    # Used when a model is created; a model keeps its hyper-parameters (docs/worker.md).
    rule: Rule = Field("softmax", description="learning rule of a new model: seed (the post's), softmax or mlp")
    learning_rate: float | None = Field(None, gt=0, description="initial learning rate (default: the rule's own)")
    schedule: Schedule | None = Field(None, description="constant, or inverse_scaling: rate / (1 + t/decay)^power")
    decay: float | None = Field(None, gt=0, description="samples over which the rate decays (inverse_scaling)")
    power: float | None = Field(None, ge=0, description="exponent of the rate's decay (inverse_scaling)")
    averaging: bool | None = Field(None, description="serve the Polyak average of the weights (softmax)")
    average_power: float | None = Field(None, ge=0, description="weight t^power of iterate t in the average")
    hidden: int | None = Field(None, ge=1, le=4096, description="hidden units of a new mlp model (default 256)")
    init_seed: int | None = Field(
        None, ge=0, le=2**63 - 1, description="seed of a new mlp model's initial weights (default 0)"
    )
    average_every: int | None = Field(
        None, ge=1, le=10**9, description="samples between an mlp model's averaging steps (default 25)"
    )

    # -- worker ---------------------------------------------------------------------------
    batch_size: int = Field(
        1000, ge=1, le=100_000, description="entries per blocking stream read, and samples per learned batch"
    )
    pack_max: int = Field(1024, ge=1, le=16384, description="samples a packed stream entry may hold")
    block_ms: int = Field(200, ge=1, le=60_000, description="how long one read waits for new entries")
    snapshot_every: int = Field(100_000, ge=1, description="samples between snapshots")
    snapshot_interval: float = Field(0.5, gt=0, le=3600, description="seconds between snapshots")
    keep_versions: int = Field(10, ge=1, le=1000, description="newest snapshot versions kept for rollback")
    keep_minutely: int = Field(
        60, ge=0, le=1440, description="also keep one version per minute for this many minutes (rollback history)"
    )
    keep_hourly: int = Field(
        24, ge=0, le=720, description="also keep one version per hour for this many hours (a pinned one is always kept)"
    )
    retention_max_len: int = Field(100_000, ge=0, description="learned samples kept in the stream")
    retention_max_age: float | None = Field(None, gt=0, description="seconds learned entries are kept")
    deadletter_max_len: int = Field(
        10_000, ge=1, le=10_000_000, description="dead letters kept (the newest; trimmed with MAXLEN ~)"
    )
    lease_ttl: float = Field(3.0, gt=0.1, le=600, description="seconds before a dead worker's lease expires")
    rolling_window: int = Field(1000, ge=1, description="samples in the rolling accuracy")
    producers_max: int = Field(
        1000, ge=1, le=100_000, description="producers whose highest sequence number the worker keeps (LRU beyond)"
    )
    producer_ttl: float = Field(
        86400.0, gt=0, description="seconds of stream time after a producer's last entry before its mark expires"
    )

    durable_replicas: int = Field(
        0, ge=0, le=16,
        description="durable mode: replicas that must hold each published batch and snapshot (WAIT) before it "
        "counts as written; 0 = Redis's asynchronous replication (docs/cluster.md: what a failover may lose)",
    )  # fmt: skip
    durable_timeout: float = Field(1.0, gt=0, le=60, description="seconds one WAIT of the durable mode waits")

    log_format: LogFormat = Field("text", description="text, or json: one JSON object per line (worker, service)")

    # -- clients --------------------------------------------------------------------------
    url: str | None = Field(
        None, max_length=2048, description="the service the client commands talk to (default: http://HOST:PORT)"
    )

    # -- service --------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="interface the service listens on")
    port: int = Field(8000, ge=0, le=65535, description="TCP port of the service")
    api_key: SecretStr | None = Field(None, description="required (X-API-Key) for mutating endpoints when set")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="other origins whose pages may call the API (CORS and the Origin check; JSON list)",
    )
    max_body_bytes: int = Field(
        64 * 1024, ge=1024, le=16 * 1024 * 1024,
        description="largest JSON body of /predict, /feedback and the model endpoints (bytes; batches have their own)",
    )  # fmt: skip
    max_batch: int = Field(10_000, ge=1, le=100_000, description="images per /predict/batch or /samples request")
    max_upload_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="largest /predict/image upload (bytes)"
    )
    max_image_pixels: int = Field(
        4_000_000, ge=10_000, le=40_000_000,
        description="largest upload in pixels, read from the image header before decoding (a digit needs far less)",
    )  # fmt: skip
    image_decoders: int = Field(
        2,
        ge=1,
        le=64,
        description="uploads decoded at once per process; 8 more per decoder wait up to 10 s, others get 503",
    )
    max_inflight_body_bytes: int = Field(
        128 * 1024 * 1024, ge=1024 * 1024,
        description="bytes of large bodies (over 1 MiB) held at once per process; more answer 503 with Retry-After",
    )  # fmt: skip
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "::1"],
        description='Host header names accepted (DNS rebinding protection; JSON list, ["*"] for any)',
    )
    allow_feedback: bool = Field(True, description="accept POST /feedback (false: 403, nothing is learned from users)")
    allow_samples: bool = Field(True, description="accept POST /samples (false: 403)")
    write_rate: float = Field(
        2.0, ge=0, description="writes (feedback, samples, pin, unpin) per second per client, 0 for no limit"
    )
    write_burst: int = Field(20, ge=1, description="writes a client may make at once before write_rate applies")
    rate_limit_loopback: bool = Field(False, description="apply write_rate to clients on this machine too")
    prediction_ttl: float = Field(3600.0, gt=0, description="seconds a prediction is kept for feedback")
    idempotency_ttl: float = Field(
        600.0, gt=0, le=7 * 86400, description="seconds an Idempotency-Key's answer is kept (at least; at most 3x)"
    )
    idempotency_max_bytes: int = Field(
        16 * 1024 * 1024, ge=64 * 1024, description="bytes of Idempotency-Key answers kept per idempotency_ttl period"
    )
    poll_interval: float = Field(0.5, gt=0, description="snapshot polling fallback (seconds)")
    served_models_max: int = Field(
        16, ge=1, le=10_000, description="registered models an API process holds at once besides the default (LRU)"
    )
    sse_max_clients: int = Field(
        100, ge=1, le=100_000, description="open GET /model/events streams per service process (503 beyond)"
    )

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        scheme = urlsplit(text).scheme
        if scheme in CLUSTER_SCHEMES:
            parse_cluster_url(text)  # raises ValueError saying what is wrong (never the password)
        elif scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://")
        return value

    @model_validator(mode="after")
    def _check_learner(self) -> Settings:
        self.hyper_parameters()  # raises ValueError naming the bad parameter
        return self

    @model_validator(mode="after")
    def _check_keys(self) -> Settings:
        problems = self.keys.collisions()
        if problems:
            raise ValueError("key collision: " + "; ".join(problems))
        return self

    @property
    def keys(self) -> Keys:
        return Keys.for_model(self.model_name, self.stream_key, self.deadletter_key)

    def to_environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``DIGITSTREAM_*`` variables that rebuild these settings in a child process.

        Laid over ``base`` (e.g. ``os.environ``) without its own ``DIGITSTREAM_*`` variables, so
        nothing stale leaks through; secrets travel in clear, as they must.
        """
        env = without_settings(base or {})
        for name, value in self.model_dump(mode="json").items():
            if value is None:
                continue
            field_value = getattr(self, name)
            if isinstance(field_value, SecretStr):
                value = field_value.get_secret_value()
            env[f"{ENV_PREFIX}{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        return env

    def hyper_parameters(self) -> HyperParameters:
        return HyperParameters.for_rule(
            self.rule,
            learning_rate=self.learning_rate,
            schedule=self.schedule,
            decay=self.decay,
            power=self.power,
            averaging=self.averaging,
            average_power=self.average_power,
            hidden=self.hidden,
            init_seed=self.init_seed,
            average_every=self.average_every,
        )


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment with explicit overrides (``None`` means "not given")."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(p) for p in error["loc"]) or "settings"
            env = f" ({ENV_PREFIX}{name.upper()})" if error["loc"] else ""
            problems.append(f"{name}{env}: {error['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


def reference_markdown() -> str:
    """docs/settings.md: every setting, its variable, default and meaning (tests keep the file in step)."""
    lines = [
        "# Settings",
        "",
        "Every role reads the same settings from `DIGITSTREAM_*` environment variables; command-line",
        "options override them. Generated from `digitstream.settings.Settings` by",
        "`python -m digitstream.settings > docs/settings.md`.",
        "",
        "| variable | default | meaning |",
        "| --- | --- | --- |",
    ]
    for name, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        shown = "none" if default is None else f"`{json.dumps(default) if isinstance(default, list) else default}`"
        meaning = info.description or ""
        lines.append(f"| `{ENV_PREFIX}{name.upper()}` | {shown} | {meaning} |")
    return "\n".join(lines) + "\n"


def without_settings(environment: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``environment`` without ``DIGITSTREAM_*`` variables."""
    return {k: v for k, v in environment.items() if not k.startswith(ENV_PREFIX)}


def redis_url(settings: Settings) -> str:
    return settings.redis_url.get_secret_value()


def redact(url: str) -> str:
    """A URL without its password, for messages and log lines (every role prints where Redis is).

    The password may be in the user information or in a ``password`` query parameter (redis-py
    reads both); a cluster URL may name several nodes.

    >>> redact("redis://worker:s3cret@redis.internal:6379/0")
    'redis://worker:***@redis.internal:6379/0'
    >>> redact("redis://localhost:6379/0")
    'redis://localhost:6379/0'
    >>> redact("rediss+cluster://:s3cret@node-1:7000,node-2:7000?ssl_cert_reqs=none")
    'rediss+cluster://:***@node-1:7000,node-2:7000?ssl_cert_reqs=none'
    >>> redact("unix:///run/redis.sock?db=0&password=s3cret")
    'unix:///run/redis.sock?db=0&password=***'
    """
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = f"{userinfo.split(':', 1)[0]}:***@{hosts}" if at and ":" in userinfo else parts.netloc
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(name == "password" for name, _ in pairs):
        query = urlencode([(n, "***" if n == "password" else v) for n, v in pairs], safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # Put together by hand: urlunsplit would drop the "//" of unix:///path.
    return (
        f"{parts.scheme}://{netloc}{parts.path}"
        + (f"?{query}" if query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


#: URL scheme of a Redis Cluster -> the scheme of one of its nodes (TLS or not).
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_HOST_PORT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^\[\]:/,@]+)(?::(?P<port>\d{1,5}))?$")


@dataclass(frozen=True)
class ClusterURL:
    """A ``redis+cluster://`` or ``rediss+cluster://`` URL, taken apart.

    ``node_url`` is the plain ``redis://`` (``rediss://``) URL of the first node, with the user,
    password and query parameters, as redis-py's cluster clients take it; ``nodes`` are all the
    nodes named (any one is enough: the client discovers the rest; more help when one is down).
    """

    node_url: str
    nodes: tuple[tuple[str, int], ...]
    tls: bool


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``)."""
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterURL:
    """Take a cluster URL apart; ValueError saying what is wrong (never quoting the password).

    Form: ``redis+cluster://[user[:password]@]host[:port][,host[:port]...][/0][?option=value...]``;
    the port defaults to 6379, a cluster has only database 0.

    >>> found = parse_cluster_url("redis+cluster://app:pw@10.0.0.5:7000,10.0.0.6?ssl_cert_reqs=none")
    >>> found.node_url, found.nodes
    ('redis://app:pw@10.0.0.5:7000?ssl_cert_reqs=none', (('10.0.0.5', 7000), ('10.0.0.6', 6379)))
    """
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"a cluster URL starts with {' or '.join(s + '://' for s in CLUSTER_SCHEMES)}")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not hosts:
        raise ValueError(f"{parts.scheme}:// needs at least one host[:port] of the cluster")
    nodes = []
    for item in hosts.split(","):
        match = _HOST_PORT.match(item)
        port = int(match["port"] or 6379) if match else 0
        if match is None or not 1 <= port <= 65535:
            raise ValueError(
                f"{parts.scheme}://: {item!r} is not host[:port] with a port 1-65535 (commas separate nodes)"
            )
        nodes.append((match["host"].strip("[]"), port))
    if parts.path not in ("", "/", "/0"):
        raise ValueError(f"a Redis Cluster has only database 0: remove {parts.path!r} from the URL")
    if any(name == "db" and value not in ("", "0") for name, value in parse_qsl(parts.query)):
        raise ValueError("a Redis Cluster has only database 0: remove the db query parameter")
    host, port = nodes[0]
    first = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    node_url = urlunsplit((scheme, f"{userinfo}{at}{first}", "", parts.query, ""))
    return ClusterURL(node_url, tuple(nodes), scheme == "rediss")


__all__ = [
    "CLUSTER_SCHEMES",
    "ENV_PREFIX",
    "ClusterURL",
    "Settings",
    "SettingsError",
    "is_cluster_url",
    "load_settings",
    "parse_cluster_url",
    "redact",
    "redis_url",
    "without_settings",
]


if __name__ == "__main__":
    print(reference_markdown(), end="")
