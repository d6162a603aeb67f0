"""``digitstream models export | import``: a model to a self-describing file, and back as a new version.

Both talk to Redis directly (``--redis-url``, as an operator: import writes a snapshot). Over HTTP
the service offers the same (``GET /models/{name}/export``, ``POST /models/{name}/import``, with
the API key). The file format and its checks: ``digitstream.model_file``; how an import meets a
running worker: ``digitstream.transfer``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import click
import redis

from digitstream.connections import RedisClient
from digitstream.jsonfields import ContractError
from digitstream.learner.params import HyperParameters
from digitstream.model_file import MAX_FILE_BYTES, ModelFileError, read_model_file, write_model_file
from digitstream.protocol import Keys
from digitstream.registry import MODEL_NAME_PATTERN, ModelConfig, Registry, RegistryError
from digitstream.settings import Settings
from digitstream.store import LeaseLost
from digitstream.transfer import TransferError, export_model, import_model, import_summary

from ._common import InputError, RuntimeFailure, connect_redis, echo_json, redis_url_option, settings_for


def _keys(client: RedisClient, settings: Settings, name: str, params: HyperParameters | None = None) -> Keys:
    """The keys of model ``name``: its registered ones (its stream may be shared); the settings' for the configured one.

    With ``params`` (an import), a model not registered yet is registered with them, so that worker
    pools learn it and every API process serves it.
    """
    if re.fullmatch(MODEL_NAME_PATTERN, name) is None:
        raise InputError(f"model name {name!r}: 1 to 64 letters, digits or _ . : -")
    registry = Registry(client)
    try:
        config = registry.get(name)
        if config is None and params is not None:
            stream = settings.stream_key if name == settings.model_name else None
            config = registry.ensure(ModelConfig.new(name, params, stream=stream, created_at=time.time()))
    except (RegistryError, ContractError) as exc:
        raise InputError(f"model {name!r}: {exc}") from None
    if config is not None:
        return config.keys
    return settings.keys if name == settings.model_name else Keys.for_model(name)


@click.command("export")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@click.option("--version", type=click.IntRange(min=1), help="a kept version [default: the latest]")
@click.option("--json", "as_json", is_flag=True, help="print the file's metadata as JSON")
@redis_url_option
def export_command(name: str, file: Path, version: int | None, as_json: bool, redis_url_option: str | None) -> None:
    """Write model NAME (its latest or a kept version) to FILE, a numpy .npz with JSON metadata."""
    settings = settings_for(redis_url=redis_url_option)
    client = connect_redis(settings)
    keys = _keys(client, settings, name)
    try:
        model = export_model(client, keys, version)
    except TransferError as exc:
        raise InputError(str(exc)) from None
    except redis.RedisError as exc:
        raise RuntimeFailure(f"Redis: {exc}") from None
    try:
        with file.open("wb") as out:
            write_model_file(model, out)
    except OSError as exc:
        raise InputError(f"cannot write {file}: {exc.strerror or exc}") from None
    meta = model.meta
    if as_json:
        echo_json(meta)
    else:
        click.echo(f"exported {name} version {meta['version']} ({meta['rule']}, {meta['samples_learned']:,} samples "
                   f"learned) to {file}: {file.stat().st_size:,} bytes, sha256 {meta['sha256'][:16]}...")  # fmt: skip


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--as", "as_name", metavar="NAME", help="the model to import into [default: the name in the file]")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@redis_url_option
def import_command(file: Path, as_name: str | None, as_json: bool, redis_url_option: str | None) -> None:
    """Load FILE (from `models export`) as the next version of its model, or of NAME with --as.

    The checksum and every array are checked first; a damaged or hostile file changes nothing.
    A running worker of that model continues from the imported version. A model not registered
    yet is registered with the file's hyper-parameters.
    """
    try:
        with file.open("rb") as source:
            data = source.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read {file}: {exc.strerror or exc}") from None
    try:
        model = read_model_file(data)
    except ModelFileError as exc:
        raise InputError(f"{file}: {exc}") from None
    settings = settings_for(redis_url=redis_url_option)
    name = as_name or model.name
    client = connect_redis(settings)
    keys = _keys(client, settings, name, model.params)
    try:
        version = import_model(client, keys, model, keep=settings.keep_versions)
    except TransferError as exc:
        raise InputError(str(exc)) from None
    except (redis.RedisError, LeaseLost) as exc:
        raise RuntimeFailure(f"Redis: {exc}; nothing was imported") from None
    meta = model.meta
    if as_json:
        echo_json(import_summary(name, version, model))
    else:
        click.echo(f"imported {file} as {name} version {version} ({meta['rule']}, "
                   f"{meta['samples_learned']:,} samples learned)")  # fmt: skip
