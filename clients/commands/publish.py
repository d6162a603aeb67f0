"""``digitstream publish``: send labelled samples from files to the model's Redis stream."""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import redis

from digitstream.clients.publisher import BULK_PACK, ProducerConflict, Publisher, PublishProgress, validate_batch
from digitstream.clients.sources import SampleSet, SourceError, epochs, load_samples
from digitstream.clients.terminal import ProgressLine, format_count
from digitstream.settings import redact, redis_url

from ._common import InputError, RuntimeFailure, connect_redis, echo_json, redis_options, settings_for

DEFAULT_PACK = BULK_PACK  # samples per entry for bulk sources
_CHUNK = 10_240  # samples gathered per publisher call (the publisher pipelines them by --batch-size)
_EXAMPLES = 3  # locations shown per rejection reason


class Rate(click.ParamType):  # type: ignore[type-arg]
    """``200``, ``200/s`` or ``1.5k/s``: samples per second."""

    name = "N/s"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            number = float(value)
        else:
            match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(k?)\s*(/\s*s)?\s*", str(value), re.IGNORECASE)
            if not match:
                self.fail(f"{value!r} is not a rate like 200 or 200/s", param, ctx)
            number = float(match[1]) * (1000 if match[2] else 1)
        if number <= 0:
            self.fail("must be more than 0 samples/s", param, ctx)
        return number


@dataclass
class Summary:
    """What happened: counts and, per reason, how often and where."""

    sent: int = 0
    producer: str = ""
    resent: int = 0  # entries sent again after Redis lost them
    lost: int = 0  # acknowledged entries Redis lost beyond the resend window
    outages: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def reject(self, where: str, reason: str) -> None:
        self.reasons[reason] += 1
        places = self.examples.setdefault(reason, [])
        if len(places) < _EXAMPLES:
            places.append(where)

    @property
    def rejected(self) -> int:
        return sum(self.reasons.values())

    def as_json(self, stream: str, seconds: float, interrupted: bool) -> dict[str, Any]:
        return {
            "stream": stream,
            "sent": self.sent,
            "rejected": self.rejected,
            "rejections": [
                {"reason": reason, "count": count, "examples": self.examples[reason]}
                for reason, count in self.reasons.most_common()
            ],
            "seconds": round(seconds, 3),
            "interrupted": interrupted,
            "producer": self.producer,
            "outages": self.outages,
            "resent": self.resent,
            "lost": self.lost,
        }


@click.command("publish")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--split",
    type=click.Choice(["train", "test"]),
    default="train",
    show_default=True,
    help="which split of an MNIST IDX directory",
)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True, help="skip this many samples first")
@click.option("--limit", type=click.IntRange(min=0), help="publish at most this many samples (per pass)")
@click.option(
    "--repeat",
    "--epochs",
    "repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="passes over the selected samples",
)
@click.option("--shuffle", "seed", type=int, metavar="SEED", help="shuffle each pass, reproducibly from SEED")
@click.option("--rate", type=Rate(), metavar="N/s", help="limit to N samples per second, e.g. 200/s")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1, max=100_000),
    default=1000,
    show_default=True,
    help="samples per Redis round trip (at least --pack)",
)
@click.option(
    "--pack",
    type=click.IntRange(min=1, max=16384),
    metavar="N",
    help="samples per stream entry: 1 = classic entries; more = packed entries, several times faster "
    "to send and learn [default: 1000 (at most the pack_max setting) for MNIST IDX, .npz and CSV "
    "sources, 1 for image folders and with --rate]",
)
@click.option("--strict", is_flag=True, help="send nothing if any sample is invalid (exit 2)")
@click.option("--producer-id", metavar="ID", help="producer id written in every entry [default: host-pid-random]")
@click.option(
    "--retry-for",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="how long to ride out a Redis outage (restart, failover) before giving up",
)
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
@redis_options
def publish(
    source: Path,
    split: str,
    offset: int,
    limit: int | None,
    repeat: int,
    seed: int | None,
    rate: float | None,
    batch_size: int,
    pack: int | None,
    strict: bool,
    producer_id: str | None,
    retry_for: float,
    as_json: bool,
    quiet: bool,
    redis_url_option: str | None,
    model_name: str | None,
) -> None:
    """Publish labelled samples from SOURCE to the stream the worker learns from.

    SOURCE is one of: a directory of MNIST IDX files (gzipped or raw); an .npz with arrays `images`
    and `labels` (or `x_train`, `y_train`); a CSV with a label then 784 pixels per row; a directory
    of images (PNG, JPEG) in sub-folders named by their digit, e.g. `digits/7/a.png`.

    Every sample is checked by the worker's own rules before it is sent; invalid ones are never
    sent and are listed, with their reasons, in the summary.

    Each sample is learned exactly once, even if Redis restarts or fails over meanwhile: entries
    carry a producer id and sequence numbers, an outage is ridden out for --retry-for seconds, and
    whatever Redis did not keep is sent again (exit 1 if Redis lost more than could be resent).

    Archives (IDX, .npz, CSV) are sent as packed entries of up to --pack samples each, several
    times faster to send and to learn; image folders and paced (--rate) feeds as classic entries,
    one sample each, easy to read with redis-cli.

    \b
    Examples:
      digitstream publish ~/mnist --limit 1000
      digitstream publish digits.csv --repeat 3 --shuffle 1 --rate 500/s
    """
    settings = settings_for(redis_url=redis_url_option, model_name=model_name)
    try:
        samples = load_samples(source, split=split)  # type: ignore[arg-type]
    except SourceError as exc:
        raise InputError(str(exc)) from None
    if offset and offset >= len(samples):
        message = f"{offset} is past the end of the source ({len(samples)} samples)"
        raise click.BadParameter(message, param_hint="--offset")
    summary = Summary()
    for where, reason in samples.unreadable:
        summary.reject(where, reason)
    if strict:
        _check_all(samples, summary)
    client = connect_redis(settings)
    keys = settings.keys
    per_pass = len(range(offset, len(samples) if limit is None else min(len(samples), offset + limit)))
    total = per_pass * repeat
    line = None if quiet else ProgressLine(total, stream=sys.stderr)

    def on_progress(progress: PublishProgress) -> None:
        if line is not None:
            done = progress.sent + progress.rejected
            line.update(done, f"rejected {format_count(progress.rejected)}" if progress.rejected else "")

    if pack is None:
        pack = min(DEFAULT_PACK, settings.pack_max) if samples.bulk and rate is None else 1
    elif pack > settings.pack_max:
        message = f"{pack} is above the pack_max setting ({settings.pack_max}): the worker would refuse the entries"
        raise click.BadParameter(message, param_hint="--pack")
    try:
        publisher = Publisher(client, keys, batch_size=batch_size, rate=rate, progress=on_progress,
                              producer_id=producer_id, retry_for=retry_for, replicas=settings.durable_replicas,
                              wait_timeout=settings.durable_timeout, pack=pack)  # fmt: skip
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--producer-id") from None
    started = time.perf_counter()
    interrupted = False
    try:
        for order in epochs(len(samples), offset=offset, limit=limit, repeat=repeat, shuffle=seed):
            for start in range(0, len(order), _CHUNK):
                rows = order[start : start + _CHUNK]
                _, rejections = publisher.publish_checked(samples.images[rows], samples.labels[rows])
                for rejection in rejections:
                    summary.reject(samples.locate(int(rows[rejection.index])), rejection.reason)
    except KeyboardInterrupt:
        interrupted = True
    except (redis.RedisError, ProducerConflict) as exc:
        raise RuntimeFailure(
            f"Redis failed after {format_count(publisher.sent)} samples were sent to {keys.samples} "
            f"at {redact(redis_url(settings))}: {exc}"
        ) from None
    finally:
        client.close()
    seconds = time.perf_counter() - started
    producer = publisher.producer
    summary.sent, summary.producer = publisher.sent, producer.producer_id
    summary.resent, summary.lost, summary.outages = producer.resent, producer.lost, producer.outages
    if line is not None:
        line.finish()
    if as_json:
        echo_json(summary.as_json(keys.samples, seconds, interrupted))
    else:
        _print_summary(summary, keys.samples, redact(redis_url(settings)), seconds, interrupted)
    if interrupted:
        sys.exit(130)
    if summary.lost:
        raise RuntimeFailure(
            f"Redis lost {format_count(summary.lost)} acknowledged samples that could no longer be resent "
            "(configure appendfsync always for no loss)"
        )
    if summary.sent == 0 and summary.rejected:
        raise InputError(f"no valid samples in {source}: nothing was sent")


def _check_all(samples: SampleSet, summary: Summary) -> None:
    """--strict: judge every sample before sending any."""
    batch = validate_batch(samples.images, samples.labels)
    for rejection in batch.rejections:
        summary.reject(samples.locate(rejection.index), rejection.reason)
    if summary.rejected:
        reason, count = summary.reasons.most_common(1)[0]
        raise InputError(
            f"{summary.rejected} invalid samples in the source, nothing sent (--strict); "
            f"e.g. {summary.examples[reason][0]}: {reason} ({count}x)"
        )


def _print_summary(summary: Summary, stream: str, url: str, seconds: float, interrupted: bool) -> None:
    rate = summary.sent / seconds if seconds > 0 else 0.0
    head = "interrupted: sent" if interrupted else "sent"
    click.echo(
        f"{head} {format_count(summary.sent)} samples to {stream} at {url} in {seconds:.1f} s "
        f"({format_count(rate)} samples/s)"
    )
    if summary.outages:
        click.echo(
            f"rode out {summary.outages} Redis outage(s) as producer {summary.producer}: "
            f"{format_count(summary.resent)} samples resent, {format_count(summary.lost)} lost"
        )
    if summary.rejected:
        click.echo(f"rejected {format_count(summary.rejected)} (not sent):")
        for reason, count in summary.reasons.most_common():
            click.echo(f"  {format_count(count)} x {reason}  (e.g. {', '.join(summary.examples[reason])})")
