"""The model registry against a real redis-server: create, list, delete, the change counter, events."""

from __future__ import annotations

import json
import time

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from digitstream.jsonfields import ContractError
from digitstream.learner.params import HyperParameters
from digitstream.registry import EVENTS_CHANNEL, MODELS_KEY, ModelConfig, Registry, RegistryError

names = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)
configs = st.builds(
    ModelConfig.new,
    names,
    st.sampled_from(
        [
            HyperParameters.for_rule("seed"),
            HyperParameters.for_rule("softmax", learning_rate=0.2),
            HyperParameters.for_rule("mlp", hidden=128, init_seed=7),
        ]
    ),
    stream=st.one_of(st.none(), st.just("shared:samples")),
    created_at=st.floats(0, 4e9),
)


@given(configs)
def test_a_config_comes_back_equal_through_json(config: ModelConfig) -> None:
    assert ModelConfig.from_json(json.loads(json.dumps(config.to_json()))) == config


@pytest.mark.parametrize("name", ["", "x" * 65, "has space", "{tag}", "a/b", "ünï"])
def test_names_that_cannot_be_a_key_prefix_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="model name"):
        ModelConfig.new(name, HyperParameters(), created_at=0.0)


def test_create_list_get_delete_move_the_version_counter(redis_client: redis.Redis) -> None:
    registry = Registry(redis_client)
    assert registry.version() == 0 and registry.models() == {}
    a = ModelConfig.new("a", HyperParameters(), created_at=time.time())
    b = ModelConfig.new("b", HyperParameters.for_rule("seed"), stream="a:samples", created_at=time.time())
    assert registry.create(a) and registry.create(b)
    assert not registry.create(ModelConfig.new("a", HyperParameters.for_rule("seed"), created_at=0.0)), "exists"
    assert registry.version() == 2
    assert registry.models() == {"a": a, "b": b} and registry.get("b") == b and registry.get("c") is None
    assert b.keys.samples == "a:samples", "b learns from a's stream"
    assert registry.delete("a") and not registry.delete("a")
    assert registry.version() == 3 and list(registry.models()) == ["b"]


def test_ensure_keeps_what_is_registered(redis_client: redis.Redis) -> None:
    registry = Registry(redis_client)
    first = registry.ensure(ModelConfig.new("m", HyperParameters.for_rule("seed"), created_at=1.0))
    again = registry.ensure(ModelConfig.new("m", HyperParameters(), created_at=2.0))
    assert first == again and again.params.rule == "seed"


def test_every_change_is_announced(redis_client: redis.Redis) -> None:
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(EVENTS_CHANNEL)
    registry = Registry(redis_client)
    registry.create(ModelConfig.new("m", HyperParameters(), created_at=1.0))
    registry.delete("m")
    events = []
    deadline = time.monotonic() + 5
    while len(events) < 2 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message:
            events.append(json.loads(message["data"]))
    pubsub.close()
    assert events == [
        {"model": "m", "change": "created", "version": 1},
        {"model": "m", "change": "deleted", "version": 2},
    ]


def test_a_full_registry_refuses_more(redis_client: redis.Redis) -> None:
    registry = Registry(redis_client, max_models=2)
    for name in ("a", "b"):
        registry.create(ModelConfig.new(name, HyperParameters(), created_at=0.0))
    with pytest.raises(RegistryError, match="full"):
        registry.create(ModelConfig.new("c", HyperParameters(), created_at=0.0))
    assert registry.version() == 2


@pytest.mark.parametrize(
    "stored",
    [
        b"not json",
        b"[]",
        b'{"name": "x"}',
        b'{"name": "x", "params": {"rule": "hebbian"}, "created_at": 0}',
        b'{"name": "y", "params": {}, "created_at": 0}',
    ],
)
def test_a_garbled_entry_is_a_contract_error_naming_the_model(redis_client: redis.Redis, stored: bytes) -> None:
    redis_client.hset(MODELS_KEY, "x", stored)
    registry = Registry(redis_client)
    with pytest.raises(ContractError, match=r"^model 'x'"):
        registry.models()
    with pytest.raises(ContractError, match=r"^model 'x'"):
        registry.get("x")
