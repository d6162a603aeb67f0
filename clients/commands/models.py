"""``digitstream models``: the model registry in Redis (create, list, show, delete).

Workers started with ``--models`` and every API process discover the models from it: a model
created here is learned and served without restarts.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
import redis

from digitstream.connections import RedisClient
from digitstream.learner.params import RULES, SCHEDULES, HyperParameters
from digitstream.protocol import Keys
from digitstream.registry import ModelConfig, Registry, RegistryError

from ._common import InputError, RuntimeFailure, connect_redis, redis_url_option, settings_for

RELEASE_TIMEOUT = 15.0  # seconds a deleted model's worker gets to write its final snapshot and let go


def _connect(redis_url_option: str | None) -> RedisClient:
    return connect_redis(settings_for(redis_url=redis_url_option))




@click.group("models")
def models() -> None:
    """Create, list, show and delete the registered models (many models on one Redis or cluster).

    Also compare them, and export one to a file or import one as a new version.
    """


@models.command("create")
@click.argument("name")
@click.option("--rule", type=click.Choice(RULES), default="softmax", show_default=True, help="learning rule")
@click.option("--stream", help="the stream it learns from (default: its own, {NAME}:samples); models may share one")
@click.option("--learning-rate", type=float, help="(default: the rule's own)")
@click.option("--schedule", type=click.Choice(SCHEDULES), help="learning-rate schedule")
@click.option("--decay", type=float, help="schedule constant")
@click.option("--power", type=float, help="schedule exponent")
@click.option("--averaging/--no-averaging", default=None, help="serve averaged weights")
@click.option("--hidden", type=int, help="hidden units (mlp)")
@click.option("--init-seed", type=int, help="initial weights' seed (mlp)")
@click.option("--average-every", type=int, help="samples between served-average updates (mlp)")
@redis_url_option
def create(name: str, rule: str, stream: str | None, redis_url_option: str | None, **params: Any) -> None:
    """Register model NAME with its rule and hyper-parameters."""
    try:
        config = ModelConfig.new(name, HyperParameters.for_rule(rule, **params), stream=stream, created_at=time.time())  # type: ignore[arg-type]
    except ValueError as exc:
        raise InputError(str(exc)) from None
    client = _connect(redis_url_option)
    try:
        created = Registry(client).create(config)
    except RegistryError as exc:
        raise RuntimeFailure(str(exc)) from None
    if not created:
        raise InputError(f"model {name!r} exists (see `digitstream models show {name}`)")
    click.echo(f"created model {name!r}: rule {rule}, stream {config.keys.samples}")


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per model")
@redis_url_option
def list_models(as_json: bool, redis_url_option: str | None) -> None:
    """List the registered models with their rule, stream and latest version."""
    client = _connect(redis_url_option)
    configs = sorted(Registry(client).models().values(), key=lambda c: c.name)
    latest = client.mget([c.keys.snapshot_latest for c in configs]) if configs else []
    if not as_json:
        click.echo(f"{'model':<24} {'rule':<8} {'version':>8}  stream")
    for config, version in zip(configs, latest, strict=True):
        shown = int(version) if version is not None else None
        if as_json:
            click.echo(json.dumps({**config.to_json(), "stream": config.keys.samples, "version": shown}))
        else:
            click.echo(f"{config.name:<24} {config.params.rule:<8} {shown if shown else '-':>8}  {config.keys.samples}")


@models.command("show")
@click.argument("name")
@redis_url_option
def show(name: str, redis_url_option: str | None) -> None:
    """Show model NAME: configuration, latest version, worker."""
    client = _connect(redis_url_option)
    config = Registry(client).get(name)
    if config is None:
        raise InputError(f"no model {name!r} is registered (see `digitstream models list`)")
    keys = config.keys
    latest, lease, status = client.mget([keys.snapshot_latest, keys.lease, keys.worker_status])
    body = {
        **config.to_json(),
        "stream": keys.samples,
        "version": int(latest) if latest is not None else None,
        "worker": _text(lease),
        "status": json.loads(status) if status is not None else None,
    }
    click.echo(json.dumps(body, indent=2))


@models.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="confirm: the model's snapshots, dead letters and own stream are deleted")
@redis_url_option
def delete(name: str, yes: bool, redis_url_option: str | None) -> None:
    """Delete model NAME and its data (needs --yes)."""
    client = _connect(redis_url_option)
    registry = Registry(client)
    config = registry.get(name)
    if config is None:
        raise InputError(f"no model {name!r} is registered")
    if not yes:
        raise InputError(f"this deletes model {name!r} and its data; run again with --yes to confirm")
    registry.delete(name)  # worker pools stop learning it at their next round (a final snapshot, then release)
    holder = _wait_for_release(client, config.keys)
    if holder is not None:
        registry.create(config)
        raise RuntimeFailure(
            f"model {name!r} is still learned by worker {holder} (not a pool that follows the registry?): "
            "stop it, then delete again; the model is registered again meanwhile"
        )
    deleted = delete_data(client, config)
    click.echo(f"deleted model {name!r} ({deleted} keys)")


def _wait_for_release(client: RedisClient, keys: Keys, timeout: float = RELEASE_TIMEOUT) -> str | None:
    """None once no worker holds the model's lease, else the holder after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        holder = client.get(keys.lease)
        if holder is None:
            return None
        if time.monotonic() > deadline:
            return _text(holder)
        time.sleep(0.1)


def delete_data(client: RedisClient, config: ModelConfig) -> int:
    """Delete a model's keys (its own stream too, a shared one is left alone); the number deleted."""
    keys: Keys = config.keys
    try:
        versions = [int(v) for v in client.zrange(keys.snapshot_versions, 0, -1)]  # type: ignore[arg-type]
        names = [keys.snapshot(v) for v in versions]
        names += [keys.snapshot_latest, keys.snapshot_versions, keys.snapshot_times, keys.lease, keys.worker_status]
        names += [keys.pinned, keys.deadletter]
        if config.stream is None:
            names += [keys.samples, keys.readers]
        else:  # a shared stream: the model stops holding back its trims (docs/worker.md, several models on one stream)
            client.hdel(keys.readers, keys.model)
        return int(client.delete(*names))  # all in the model's slot ({M}); a cluster client splits by slot anyway
    except redis.RedisError as exc:
        raise RuntimeFailure(f"deleting the data of model {config.name!r}: {exc}") from None


def _text(value: bytes | str | None) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


@models.command("migrate")
@click.option(
    "--model", "model_name", metavar="NAME", help="the model [default: $DIGITSTREAM_MODEL_NAME or digitstream]"
)
@click.option("--stream", "stream_key", help="its stream, if it was not the default one")
@click.option("--deadletter-stream", "deadletter_key", help="its dead-letter stream, if not the default one")
@redis_url_option
def migrate(
    model_name: str | None, stream_key: str | None, deadletter_key: str | None, redis_url_option: str | None
) -> None:
    """Move a model's keys from the layout before 0.3 (M:...) to the hash-tagged one ({M}:...)."""
    from digitstream.connections import is_cluster
    from digitstream.migration import MigrationError
    from digitstream.migration import migrate as move

    settings = settings_for(
        redis_url=redis_url_option, model_name=model_name, stream_key=stream_key, deadletter_key=deadletter_key
    )
    client = connect_redis(settings)
    try:
        moved = move(client, settings.keys, cluster=is_cluster(client))
    except MigrationError as exc:
        raise RuntimeFailure(str(exc)) from None
    Registry(client).ensure(ModelConfig.of_settings(settings, created_at=time.time()))
    for source, target in moved.keys:
        click.echo(f"{source} -> {target}")
    click.echo(f"model {settings.model_name!r}: {len(moved.keys)} keys moved to the {settings.keys.tag} layout")


def _add_compare() -> None:
    from .compare import compare
    from .model_transfer import export_command, import_command

    models.add_command(compare)
    models.add_command(export_command)
    models.add_command(import_command)


_add_compare()
