"""``digitstream models compare A B ...``: champion and challengers side by side, from their snapshots."""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass

import click
import orjson

from digitstream.connections import RedisClient
from digitstream.contracts import CurvePoint, SnapshotMeta
from digitstream.registry import Registry
from digitstream.snapshot import META_FIELD

from ._common import InputError, connect_redis, redis_url_option, settings_for

CURVE_ROWS = 12


@dataclass(frozen=True)
class Standing:
    """One model's latest snapshot, as compared."""

    name: str
    rule: str
    learning_rate: float
    stream: str
    version: int | None
    meta: SnapshotMeta | None

    def accuracy_at(self, samples: int) -> float | None:
        """The prequential accuracy at the last curve point at or before ``samples``."""
        curve: tuple[CurvePoint, ...] = self.meta.metrics.learning_curve if self.meta else ()
        at = bisect.bisect_right([point[0] for point in curve], samples)
        return curve[at - 1][1] if at else None


def standings(client: RedisClient, names: tuple[str, ...]) -> list[Standing]:
    registry = Registry(client)
    found = []
    for name in names:
        config = registry.get(name)
        if config is None:
            raise InputError(f"no model {name!r} is registered (see `digitstream models list`)")
        keys = config.keys
        latest = client.get(keys.snapshot_latest)
        version = int(latest) if latest is not None else None
        meta = None
        if version is not None:
            raw = client.hget(keys.snapshot(version), META_FIELD)
            if raw is not None:
                meta = SnapshotMeta.from_json(orjson.loads(raw))
        params = config.params
        found.append(Standing(name, params.rule, params.learning_rate, keys.samples, version, meta))
    return found


@click.command("compare")
@click.argument("names", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per model, with its learning curve")
@redis_url_option
def compare(names: tuple[str, ...], as_json: bool, redis_url_option: str | None) -> None:
    """Compare models (e.g. learning from one stream): accuracies and learning curves side by side."""
    client = connect_redis(settings_for(redis_url=redis_url_option))
    found = standings(client, names)
    if as_json:
        for s in found:
            metrics = s.meta.metrics.to_json() if s.meta else None
            body = {"model": s.name, "rule": s.rule, "learning_rate": s.learning_rate, "stream": s.stream}
            click.echo(json.dumps({**body, "version": s.version, "metrics": metrics}))
        return
    click.echo(f"{'model':<20} {'rule':<8} {'rate':>7} {'samples':>10} {'prequential':>12} {'rolling':>8}  stream")
    for s in found:
        m = s.meta.metrics if s.meta else None
        samples = f"{s.meta.samples_learned:,}" if s.meta else "-"
        pre = f"{m.prequential_accuracy:.2%}" if m and m.prequential_accuracy is not None else "-"
        rolling = f"{m.rolling_accuracy:.2%}" if m and m.rolling_accuracy is not None else "-"
        click.echo(f"{s.name:<20} {s.rule:<8} {s.learning_rate:>7g} {samples:>10} {pre:>12} {rolling:>8}  {s.stream}")
    longest = max((s.meta.samples_learned for s in found if s.meta), default=0)
    if longest == 0:
        return
    click.echo("\nprequential accuracy by samples learned (the learning curves):")
    click.echo(f"{'samples':>10}  " + "  ".join(f"{s.name[:12]:>12}" for s in found))
    for row in range(1, CURVE_ROWS + 1):
        at = longest * row // CURVE_ROWS
        cells = []
        for s in found:
            value = s.accuracy_at(at)
            cells.append(f"{value:>12.2%}" if value is not None else f"{'-':>12}")
        click.echo(f"{at:>10,}  " + "  ".join(cells))
