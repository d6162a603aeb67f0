"""The model registry: which models exist and how each is configured, kept in Redis.

Redis layout (one hash slot: the tag ``{digitstream/registry}`` cannot be a model's, as model names
have no ``/``)::

    {digitstream/registry}:models    hash     model name -> ModelConfig JSON
    {digitstream/registry}:version   string   counter, incremented by every change
    {digitstream/registry}:events    pub/sub  JSON {"model", "change": "created" | "deleted", "version"}
    {digitstream/registry}:workers   zset     live worker pools (pool id -> expiry, ms, server clock)
    {digitstream/registry}:workers:patterns
                                     hash     pool id -> JSON list of the model patterns it serves

Readers (workers, services) poll the cheap ``version`` counter and read the hash only when it moved,
so a registry of 100,000 models costs one GET per poll; the events channel only shortens the wait.
Every change is one script: the hash, the counter and the event move together.

Examples
--------
>>> config = ModelConfig.new("champion", HyperParameters.for_rule("softmax"), created_at=1.7e9)
>>> ModelConfig.from_json(config.to_json()) == config
True
>>> config.keys.samples
'{champion}:samples'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .jsonfields import ContractError, get, json_object, number, optional, string
from .learner.params import HyperParameters
from .protocol import Keys

if TYPE_CHECKING:
    from .connections import RedisClient
    from .settings import Settings

TAG = "{digitstream/registry}"
MODELS_KEY = f"{TAG}:models"
VERSION_KEY = f"{TAG}:version"
EVENTS_CHANNEL = f"{TAG}:events"
MEMBERS_KEY = f"{TAG}:workers"  # digitstream.worker.pool
PATTERNS_KEY = f"{TAG}:workers:patterns"
MODEL_NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"  # as Settings.model_name: no braces, no slash
MAX_MODELS = 1_000_000  # a bound on what `models create` accepts, far above any plan (docs/scaling.md)

Change = Literal["created", "deleted"]


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (the model exists, the registry is full, ...)."""


@dataclass(frozen=True)
class ModelConfig:
    """One registered model: its learning rule and hyper-parameters, and the stream it learns from."""

    name: str
    params: HyperParameters
    stream: str | None  # None: the model's own stream (Keys.samples)
    created_at: float  # unix seconds

    @classmethod
    def new(cls, name: str, params: HyperParameters, *, stream: str | None = None, created_at: float) -> ModelConfig:
        _check_name(name)
        return cls(name, params, stream or None, created_at)

    @property
    def keys(self) -> Keys:
        return Keys.for_model(self.name, self.stream)

    def settings(self, base: Settings) -> Settings:
        """``base`` (connection, worker and service settings) for this model: its name, stream and rule."""
        params = self.params
        mlp = params.rule == "mlp"
        return base.model_copy(
            update={
                "model_name": self.name,
                "stream_key": self.stream,
                "deadletter_key": None,
                "rule": params.rule,
                "learning_rate": params.learning_rate,
                "schedule": params.schedule,
                "decay": params.decay,
                "power": params.power,
                "averaging": params.averaging,
                "average_power": params.average_power,
                "hidden": params.hidden if mlp else None,
                "init_seed": params.init_seed if mlp else None,
                "average_every": params.average_every if mlp else None,
            }
        )

    @classmethod
    def of_settings(cls, settings: Settings, *, created_at: float) -> ModelConfig:
        """The configuration that ``settings`` describe (the single-model settings' model)."""
        return cls.new(
            settings.model_name, settings.hyper_parameters(), stream=settings.stream_key, created_at=created_at
        )

    def to_json(self) -> dict[str, Any]:
        params = self.params.to_json()
        return {"name": self.name, "params": params, "stream": self.stream, "created_at": self.created_at}

    @classmethod
    def from_json(cls, data: Any, where: str = "model") -> ModelConfig:
        data = json_object(data, where)
        name = get(data, "name", string, where)
        try:
            _check_name(name)
            params = HyperParameters.from_json(get(data, "params", json_object, where))
        except ValueError as exc:
            raise ContractError(f"{where}: {exc}") from None
        stream = get(data, "stream", optional(string), where, None)
        return cls(name, params, stream or None, get(data, "created_at", number, where))


def _check_name(name: str) -> None:
    if not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise ValueError(f"model name {name!r}: 1 to 64 letters, digits or _ . : - (no braces, no slash)")


# KEYS: models, version ; ARGV: name, config JSON ("" = delete), max models, event change.
# Returns the new registry version, 0 if nothing changed (exists on create, absent on delete),
# -1 if the registry is full.
_CHANGE = """
local name, config, cap, change = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
if config ~= '' then
  if redis.call('HEXISTS', KEYS[1], name) == 1 then return 0 end
  if redis.call('HLEN', KEYS[1]) >= cap then return -1 end
  redis.call('HSET', KEYS[1], name, config)
else
  if redis.call('HDEL', KEYS[1], name) == 0 then return 0 end
end
return redis.call('INCR', KEYS[2])
"""


class Registry:
    """The registry on one Redis (or a cluster); the client is passed in."""

    def __init__(self, client: RedisClient, *, max_models: int = MAX_MODELS) -> None:
        self._client = client
        self._change = client.register_script(_CHANGE)
        self.max_models = max_models

    def create(self, config: ModelConfig) -> bool:
        """Register ``config``; False if a model of that name exists (it is left as it is)."""
        version = self._run(config.name, json.dumps(config.to_json(), allow_nan=False), "created")
        if version < 0:
            raise RegistryError(f"the registry is full ({self.max_models:,} models)")
        return version > 0

    def ensure(self, config: ModelConfig) -> ModelConfig:
        """The registered config of ``config.name``, registering ``config`` first if there is none."""
        self.create(config)
        stored = self.get(config.name)
        if stored is None:  # deleted between the two calls
            raise RegistryError(f"model {config.name!r} was deleted while being registered")
        return stored

    def delete(self, name: str) -> bool:
        """Unregister ``name`` (its data is the caller's to delete); False if it was not registered."""
        return self._run(name, "", "deleted") > 0

    def get(self, name: str) -> ModelConfig | None:
        raw = self._client.hget(MODELS_KEY, name)
        return None if raw is None else _config(name, raw)

    def models(self) -> dict[str, ModelConfig]:
        """Every registered model (a malformed entry raises ContractError naming it)."""
        return parse_models(self._client.hgetall(MODELS_KEY))

    def version(self) -> int:
        """The registry's change counter (0 before the first change)."""
        raw = self._client.get(VERSION_KEY)
        return int(raw) if raw is not None else 0

    def _run(self, name: str, config: str, change: Change) -> int:
        version = int(self._change(keys=[MODELS_KEY, VERSION_KEY], args=[name, config, self.max_models, change]))
        if version > 0:
            event = {"model": name, "change": change, "version": version}
            self._client.publish(EVENTS_CHANNEL, json.dumps(event))
        return version


def parse_models(raw: Mapping[bytes | str, bytes | str]) -> dict[str, ModelConfig]:
    """The registry hash as configs by name."""
    models = {}
    for key, value in raw.items():
        name = key.decode(errors="replace") if isinstance(key, bytes) else key
        models[name] = _config(name, value)
    return models


def _config(name: str, raw: bytes | str) -> ModelConfig:
    where = f"model {name!r}"
    try:
        data = json.loads(raw)
    except ValueError:
        raise ContractError(f"{where}: not JSON") from None
    config = ModelConfig.from_json(data, where)
    if config.name != name:
        raise ContractError(f"{where}: registered under another name ({config.name!r})")
    return config


__all__ = [
    "EVENTS_CHANNEL",
    "MEMBERS_KEY",
    "MODELS_KEY",
    "PATTERNS_KEY",
    "VERSION_KEY",
    "ModelConfig",
    "Registry",
    "RegistryError",
    "parse_models",
]
