"""``digitstream worker``: learn from the model's Redis stream until stopped (SIGTERM/SIGINT).

Options override the ``DIGITSTREAM_*`` environment variables; invalid settings exit with code 2
and a message naming the setting. The first SIGTERM/SIGINT finishes the current batch, writes a
final snapshot and exits 0; a second SIGINT exits at once.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

import click
import redis

from digitstream.connections import RedisClient, worker_client
from digitstream.learner.params import RULES
from digitstream.logs import LOG_FORMATS, configure_logging
from digitstream.redis_checks import check_eviction
from digitstream.settings import Settings, SettingsError, load_settings, redact, redis_url

EXIT_RUNTIME = 1
EXIT_USAGE = 2


@click.command("worker")
@click.option("--redis-url", help="redis:// or rediss:// URL, with user:password@ if needed [DIGITSTREAM_REDIS_URL]")
@click.option("--model", "model_name", help="model name, the prefix of all its keys [DIGITSTREAM_MODEL_NAME]")
@click.option("--stream", "stream_key", help="samples stream key (default {MODEL}:samples)")
@click.option("--deadletter-stream", "deadletter_key", help="dead-letter stream key (default {MODEL}:deadletter)")
@click.option("--rule", type=click.Choice(RULES), help="learning rule of a new model [softmax]")
@click.option("--learning-rate", type=float, help="learning rate of a new model (default: the rule's own)")
@click.option("--hidden", type=int, help="hidden units of a new mlp model [256]")
@click.option("--init-seed", type=int, help="seed of a new mlp model's initial weights [0]")
@click.option("--batch-size", type=int, help="entries per blocking stream read [1000]")
@click.option("--block-ms", type=int, help="how long one read waits for new entries [200]")
@click.option("--snapshot-every", type=int, help="samples between snapshots [100000]")
@click.option("--snapshot-interval", type=float, help="seconds between snapshots [0.5]")
@click.option("--keep-versions", type=int, help="snapshot versions kept for rollback [10]")
@click.option("--retention-max-len", type=int, help="learned entries kept in the stream [100000]")
@click.option("--retention-max-age", type=float, help="seconds learned entries are kept in the stream")
@click.option("--lease-ttl", type=float, help="seconds before a dead worker's lease expires [3]")
@click.option("--rolling-window", type=int, help="samples in the rolling accuracy [1000]")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), help="text, or json (one object per line) [text]")
@click.option(
    "--models",
    "models",
    help="run a worker pool: learn every registered model matching 'all' or comma-separated names/globs, "
    "shared with the other pools (rendezvous hashing); the other options are the pool's defaults",
)
@click.option("--burst", is_flag=True, help="stop once the stream is drained instead of waiting for more")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
def worker_command(burst: bool, log_level: str, models: str | None, **options: Any) -> None:
    """Learn from the model's Redis stream, one sample at a time, writing versioned snapshots.

    Settings come from DIGITSTREAM_* environment variables, overridden by these options.
    """
    try:
        settings = load_settings(**options)
    except SettingsError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    configure_logging(log_level, settings.log_format)
    if models is not None:
        if burst:
            click.echo("Error: --burst applies to one model, not to --models", err=True)
            sys.exit(EXIT_USAGE)
        run_pool(settings, models)
        return
    # Imported only once the settings are valid, so that a bad one is reported at once: the loop loads
    # numba, river and scipy (the learner's kernels, the drift detector), seconds on a cold start.
    from .loop import Worker

    client = worker_client(settings)
    worker = Worker(settings, client)
    log = logging.getLogger("digitstream.worker")
    register_default_model(client, settings, log)
    log.info(
        "worker %s for model %r on %s, stream %r (batch %d, snapshot every %d samples or %gs)%s",
        worker.worker_id, settings.model_name, redact(redis_url(settings)), settings.keys.samples,
        settings.batch_size, settings.snapshot_every, settings.snapshot_interval, ", burst" if burst else "",
    )  # fmt: skip
    check_eviction(client, log)

    run_until_signalled(worker, lambda: worker.run(burst=burst), client, settings, log)
    log.info("worker %s stopped: %s samples learned", worker.worker_id, f"{worker.samples_learned:,}")


def register_default_model(client: RedisClient, settings: Settings, log: logging.Logger) -> None:
    """The single-model settings' model goes into the registry on first use (where the ACL allows it)."""
    import time

    from digitstream.registry import ModelConfig, Registry

    try:
        Registry(client).ensure(ModelConfig.of_settings(settings, created_at=time.time()))
    except redis.RedisError as exc:  # no permission, or Redis not up yet: the worker itself waits for it
        log.debug("model %r not registered: %s", settings.model_name, exc)


def run_pool(settings: Settings, models: str) -> None:
    """``digitstream worker --models ...``: a worker pool until SIGTERM/SIGINT."""
    from .pool import WorkerPool, parse_patterns

    try:
        patterns = parse_patterns(models)
    except ValueError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    client = worker_client(settings)
    pool = WorkerPool(settings, client, patterns)
    log = logging.getLogger("digitstream.worker")
    check_eviction(client, log)

    run_until_signalled(pool, pool.run, client, settings, log)


class Stoppable(Protocol):
    @property
    def stopping(self) -> bool: ...

    def stop(self) -> None: ...


def run_until_signalled(
    target: Stoppable, run: Callable[[], None], client: RedisClient, settings: Settings, log: logging.Logger
) -> None:
    """``run()`` until it returns; the first SIGTERM/SIGINT asks ``target`` to stop (after a final snapshot),
    a second SIGINT exits at once (130). Credentials refused exit 1 with one line; any other failure is
    logged with its traceback and exits 1."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if target.stopping and signum == signal.SIGINT:
            raise KeyboardInterrupt
        target.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    # Every read allocates thousands of short-lived objects, so the collector runs often; its full
    # passes would walk the ~130,000 objects of numpy/numba/river/redis-py each time (measured:
    # reads up to ~40 % slower). They never die, so move them out of its sight.
    gc.collect()
    gc.freeze()
    try:
        run()
    except KeyboardInterrupt:
        log.warning("interrupted: exiting without a final snapshot")
        sys.exit(130)
    except redis.AuthenticationError as exc:
        click.echo(f"Error: Redis at {redact(redis_url(settings))} refused the credentials: {exc}", err=True)
        sys.exit(EXIT_RUNTIME)
    except Exception as exc:  # a bug or an unusable Redis state: logged with its traceback, exit 1
        log.exception("worker failed: %s", exc)
        sys.exit(EXIT_RUNTIME)
    finally:
        client.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
