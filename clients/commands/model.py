"""``digitstream status | versions | pin | unpin``: look at the served model and roll it back."""

from __future__ import annotations

import time
from dataclasses import asdict

import click

from digitstream.clients.prediction import ModelStatus
from digitstream.clients.terminal import format_count, format_duration

from ._common import echo_json, service_client, service_errors, service_options


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="print the service's answer as JSON")
@service_options
def status(as_json: bool, url: str | None, api_key: str | None, timeout: float, model_name: str | None = None) -> None:
    """Show the served model: version, samples learned, accuracy, worker and lag."""
    with service_client(url, api_key, timeout, model_name) as client, service_errors():
        model = client.model()
    if as_json:
        echo_json(model.raw)
    else:
        click.echo(describe(model))


@click.command("versions")
@click.option("--json", "as_json", is_flag=True, help="print the service's answer as JSON")
@service_options
def versions(
    as_json: bool, url: str | None, api_key: str | None, timeout: float, model_name: str | None = None
) -> None:
    """List the kept model versions (oldest first) and which one is served."""
    with service_client(url, api_key, timeout, model_name) as client, service_errors():
        answer = client.versions()
    if as_json:
        echo_json(asdict(answer))
        return
    click.echo(f"{'version':>8}  {'samples':>10}  {'accuracy':>8}  {'age':>8}")
    now = time.time()
    for info in answer.versions:
        flags = []
        if info.version == answer.served:
            flags.append("served")
        if info.version == answer.pinned:
            flags.append("pinned")
        if info.version == answer.latest:
            flags.append("latest")
        accuracy = f"{info.prequential_accuracy:.2%}" if info.prequential_accuracy is not None else "-"
        age = format_duration(now - info.created_at) if info.created_at else "-"
        click.echo(
            f"{info.version:>8}  {format_count(info.samples_learned):>10}  {accuracy:>8}  {age:>8}  {' '.join(flags)}"
        )
    if not answer.versions:
        click.echo("(no versions yet: is the worker running?)")


@click.command("pin")
@click.argument("version", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="print the service's answer as JSON")
@service_options
def pin(
    version: int, as_json: bool, url: str | None, api_key: str | None, timeout: float, model_name: str | None = None
) -> None:
    """Serve VERSION until `digitstream unpin` (a rollback); the worker keeps learning meanwhile."""
    with service_client(url, api_key, timeout, model_name) as client, service_errors():
        model = client.pin(version)
    if as_json:
        echo_json(model.raw)
    else:
        click.echo(f"pinned: serving version {model.version} ({format_count(model.samples_learned)} samples learned)")


@click.command("unpin")
@click.option("--json", "as_json", is_flag=True, help="print the service's answer as JSON")
@service_options
def unpin(as_json: bool, url: str | None, api_key: str | None, timeout: float, model_name: str | None = None) -> None:
    """Serve the latest version again."""
    with service_client(url, api_key, timeout, model_name) as client, service_errors():
        model = client.unpin()
    if as_json:
        echo_json(model.raw)
    else:
        click.echo(f"unpinned: serving the latest version, {model.version}")


def describe(model: ModelStatus) -> str:
    """A few lines a person can read at a glance."""
    pinned = "  [pinned]" if model.pinned else ""
    lines = [f"model      {model.model} ({model.rule}), version {model.version}{pinned}"]
    age = f", {format_duration(model.age_seconds)} old" if model.age_seconds is not None else ""
    lines.append(f"learned    {format_count(model.samples_learned)} samples{age}")
    pre, rolling = model.prequential_accuracy, model.rolling_accuracy
    if pre is not None:
        window = model.metrics.get("rolling_window")
        recent = f", last {format_count(window)}: {rolling:.2%}" if rolling is not None and window else ""
        lines.append(f"accuracy   {pre:.2%} prequential{recent}")
    worker = model.worker
    if worker:
        throughput = worker.get("throughput")
        speed = f", {format_count(throughput)} samples/s" if throughput else ""
        lines.append(f"worker     {worker.get('state', '?')} ({worker.get('worker_id', '?')}){speed}")
        faults = worker.get("faults") or []
        if faults:
            lines.append(f"faults     {len(faults)}: {faults[-1]}")
    else:
        lines.append("worker     none reporting (is `digitstream worker` running?)")
    lag = f"{format_count(model.lag)} entries not yet learned" if model.lag is not None else "-"
    lines.append(f"lag        {lag}")
    if model.health is not None:
        detail = model.learning.get("detail")
        lines.append(f"learning   {model.health}" + (f": {detail}" if detail and model.health != "ok" else ""))
    return "\n".join(lines)
