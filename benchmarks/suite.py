"""``digitstream bench``: every benchmark side by side in one run, written to BENCHMARKS.md with plots.

One embedded redis-server serves all the parts (emptied between them); each part is the module
that also runs alone (``benchmarks/learners.py``, ``worker_ingest.py``, ``publisher.py``,
``service.py``), so the numbers here are theirs. The result is ``BENCHMARKS.md`` (the goals with
pass/fail, each part's table with medians and ratios, the machine and the versions) and PNG plots
under ``docs/bench/`` in the output directory.

    digitstream bench [--data DIR] [--out DIR] [--quick] [--strict]
    python -m digitstream.benchmarks.suite [same options]

``--quick`` runs every part at small sizes (a smoke test for CI: the numbers mean little).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

# The parts (numpy, numba, redis, the worker...) are imported when the suite runs, not when the
# CLI lists its commands: `digitstream --help` stays fast.

REPO = Path(__file__).resolve().parent.parent
PLOTS = Path("docs") / "bench"
GOAL_LEARNER_RATE = 500_000
GOAL_TEST_ACCURACY = 0.910
GOAL_PREQUENTIAL = 0.895
GOAL_MLP_RATE = 100_000
GOAL_MLP_TEST = 0.960
GOAL_MLP_PREQUENTIAL = 0.935
GOAL_MLP_TEST_PASSES = 0.975


@dataclass(frozen=True)
class Goal:
    """One goal from the issues, measured in this run."""

    what: str
    target: str
    measured: str
    met: bool


@dataclass(frozen=True)
class Sizes:
    """How much each part does: full runs for the record, ``quick`` ones for the CI smoke test."""

    learner_repeats: int
    ingest_repeats: int
    publisher_repeats: int
    load_seconds: float
    load_repeats: int
    batch_repeats: int
    freshness_samples: int
    quick: bool
    packed_repeats: int = 3
    packed_passes: int = 20  # over the shared stream, end to end (issue 18)
    packed_ingest_passes: int = 4  # over the shared stream, worker ingest against the learner alone

    @classmethod
    def for_run(cls, quick: bool) -> Sizes:
        if quick:
            return cls(1, 1, 1, 1.0, 1, 1, 4, True, packed_repeats=1, packed_passes=2, packed_ingest_passes=1)
        return cls(5, 5, 5, 5.0, 3, 5, 20, False)


def default_data_dir() -> Path:
    """``DIGITSTREAM_TEST_DATA``, else the shared data beside the checkout, else the usual lookup."""
    explicit = os.environ.get("DIGITSTREAM_TEST_DATA")
    if explicit:
        return Path(explicit)
    from digitstream.datasets import find_mnist

    shared = REPO.parent / "shared" / "data" / "mnist"
    return shared if shared.is_dir() else find_mnist(None)


def default_out_dir() -> Path:
    """The checkout's root when run from one (BENCHMARKS.md lives there), else the current directory."""
    return REPO if (REPO / "pyproject.toml").is_file() else Path.cwd()


# -- running --------------------------------------------------------------------------------------


def run(data_dir: Path, sizes: Sizes, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every part on one embedded redis-server; returns their reports and the run's context."""
    import redis

    from digitstream.benchmarks import (
        fuzz_stream,
        learners,
        machine,
        packed,
        publisher,
        service,
        uploads,
        worker_ingest,
    )
    from digitstream.clients.embedded_redis import RedisServer

    started = time.perf_counter()
    report: dict[str, Any] = {
        "machine": machine.describe(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": os.getloadavg()[0],
        "quick": sizes.quick,
    }
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis", appendonly=False) as server:
        client = redis.Redis.from_url(server.url)
        parts: list[tuple[str, Callable[[], dict[str, Any]], Callable[[dict[str, Any]], str]]] = [
            ("learners", lambda: learners.run(data_dir, sizes.learner_repeats, sizes.quick), learners.table),
            (
                "worker_ingest",
                lambda: worker_ingest.run(data_dir, sizes.ingest_repeats, server=server),
                worker_ingest.table,
            ),
            (
                "publisher",
                lambda: publisher.run(data_dir, sizes.publisher_repeats, quick=sizes.quick, server=server),
                publisher.table,
            ),
            (
                "packed",
                lambda: packed.run(
                    data_dir,
                    sizes.packed_repeats,
                    sizes.packed_passes,
                    server=server,
                    ingest_passes=sizes.packed_ingest_passes,
                ),
                packed.table,
            ),
            (
                "service",
                lambda: service.run(
                    data_dir,
                    duration=sizes.load_seconds,
                    repeats=sizes.load_repeats,
                    batch_repeats=sizes.batch_repeats,
                    freshness_repeats=sizes.freshness_samples,
                    server=server,
                ),
                service.report_text,
            ),
            (
                "uploads",
                lambda: uploads.run(
                    1_000_000 if sizes.quick else 4_000_000,
                    duration=sizes.load_seconds,
                    batches=not sizes.quick,
                    server=server,
                    repeats=1 if sizes.quick else 3,
                ),
                uploads.report_text,
            ),
            (
                "fuzz",
                lambda: fuzz_stream.run(
                    *((2000, 500, 5000) if sizes.quick else (100_000, 6000, 50_000)),
                    repeats=1 if sizes.quick else 3,
                    server=server,
                ),
                fuzz_stream.report_text,
            ),
        ]
        for name, part, text in parts:
            client.flushall()
            echo(f"== {name}")
            part_started = time.perf_counter()
            report[name] = part()
            report[name]["elapsed_s"] = time.perf_counter() - part_started
            echo(text(report[name]))
        client.close()
    report["served_curve_check"] = check_served_curve(data_dir, report["service"])
    report["load_after"] = os.getloadavg()[0]
    report["elapsed_s"] = time.perf_counter() - started
    return report


def check_served_curve(data_dir: Path, service_report: dict[str, Any]) -> dict[str, Any]:
    """Does the learning curve served by ``GET /model`` (the dashboard's) match the learner's own numbers?

    The service benchmark's worker learned the first ``service.TRAINING_SAMPLES`` training samples
    with the default settings; a learner built from the same settings, fed the same samples here,
    gives each prequential accuracy exactly, so every served point can be checked.
    """
    import numpy as np

    from digitstream.datasets import load_mnist
    from digitstream.learner import new_learner
    from digitstream.settings import load_settings

    served = service_report["served_model"]["metrics"].get("learning_curve") or []
    train = load_mnist(data_dir, "train")
    n = service_report["served_model"]["samples_learned"]
    learner = new_learner(load_settings().hyper_parameters())
    correct = learner.learn_many(train.images[:n], train.labels[:n]) == train.labels[:n]
    cumulative = np.cumsum(correct) / np.arange(1, n + 1)
    differences = [abs(float(cumulative[int(p[0]) - 1]) - float(p[1])) for p in served if 0 < int(p[0]) <= n]
    return {"points": len(differences), "max_difference": max(differences, default=None), "samples": n}


# -- goals and the report ---------------------------------------------------------------------------


def goals(report: dict[str, Any]) -> list[Goal]:
    """The issues' goals, each with what this run measured."""
    from digitstream.benchmarks import learners, publisher, service, worker_ingest

    named = learners.by_name(report["learners"])
    softmax, seed, mlp = named[learners.SOFTMAX], named[learners.SEED], named[learners.MLP]
    passes = report["learners"]["mlp_passes"]
    ingest, pub, svc = report["worker_ingest"], report["publisher"], report["service"]
    worker_rate = ingest["rates"][worker_ingest.WORKER]
    predict = svc["predict"]
    batch_rate = svc["batch"]["binary (N x 784 bytes)"]["images_per_s"]
    fresh = svc["freshness"]["median_s"]
    return [
        Goal("learner, softmax rule", f">= {GOAL_LEARNER_RATE:,} samples/s", f"{softmax.rate:,.0f}/s",
             softmax.rate >= GOAL_LEARNER_RATE),
        Goal("learner, seed rule", f">= {GOAL_LEARNER_RATE:,} samples/s", f"{seed.rate:,.0f}/s",
             seed.rate >= GOAL_LEARNER_RATE),
        Goal("softmax test accuracy (10,000 images)", f">= {GOAL_TEST_ACCURACY:.1%}", f"{softmax.test or 0:.2%}",
             (softmax.test or 0) >= GOAL_TEST_ACCURACY),
        Goal("softmax prequential accuracy (one pass)", f">= {GOAL_PREQUENTIAL:.1%}",
             f"{softmax.prequential or 0:.2%}", (softmax.prequential or 0) >= GOAL_PREQUENTIAL),
        Goal("worker ingest vs raw read ceiling", f">= {worker_ingest.GOAL_RATIO:.0%}",
             f"{ingest['worker_ratio']:.0%}", ingest["worker_ratio"] >= worker_ingest.GOAL_RATIO),
        Goal("worker ingest", f">= {worker_ingest.GOAL_RATE:,} samples/s", f"{worker_rate:,.0f}/s",
             worker_rate >= worker_ingest.GOAL_RATE),
        Goal("publisher vs raw pipelined XADD", f">= {publisher.GOAL_RATIO:.0%}", f"{pub['ratio']:.0%}",
             pub["ratio"] >= publisher.GOAL_RATIO),
        Goal(f"POST /predict vs trivial endpoint ({svc['connections']} connections)", f">= {service.GOAL_RATIO:.0%}",
             f"{predict['ratio']:.0%}", predict["ratio"] >= service.GOAL_RATIO),
        Goal(f"POST /predict p99 ({svc['connections']} connections)", f"<= {service.GOAL_P99_MS:g} ms",
             f"{predict['p99_ms']:.1f} ms", predict["p99_ms"] <= service.GOAL_P99_MS),
        Goal("POST /predict/batch, raw bytes", f">= {service.GOAL_BATCH_RATE:,} images/s", f"{batch_rate:,.0f}/s",
             batch_rate >= service.GOAL_BATCH_RATE),
        Goal("freshness: XADD -> served model has learned it", f"median <= {service.GOAL_FRESHNESS_S:g} s",
             f"{fresh:.3f} s", fresh <= service.GOAL_FRESHNESS_S),
        *upload_goals(report["uploads"]),
        *fuzz_goals(report["fuzz"]),
        Goal("learner, mlp rule (default configuration)", f">= {GOAL_MLP_RATE:,} samples/s", f"{mlp.rate:,.0f}/s",
             mlp.rate >= GOAL_MLP_RATE),
        Goal("mlp test accuracy, one pass", f">= {GOAL_MLP_TEST:.1%}", f"{mlp.test or 0:.2%}",
             (mlp.test or 0) >= GOAL_MLP_TEST),
        Goal("mlp prequential accuracy, one pass", f">= {GOAL_MLP_PREQUENTIAL:.1%}", f"{mlp.prequential or 0:.2%}",
             (mlp.prequential or 0) >= GOAL_MLP_PREQUENTIAL),
        Goal(f"mlp test accuracy after {len(passes)} passes", f">= {GOAL_MLP_TEST_PASSES:.1%}", f"{passes[-1]:.2%}",
             passes[-1] >= GOAL_MLP_TEST_PASSES),
        Goal("worker end-to-end vs its learner alone, mlp rule", f">= {worker_ingest.GOAL_MLP_RATIO:.0%}",
             f"{ingest['mlp_worker_ratio']:.0%}", ingest["mlp_worker_ratio"] >= worker_ingest.GOAL_MLP_RATIO),
        *packed_goals(report["packed"]),
    ]  # fmt: skip


def packed_goals(report: dict[str, Any]) -> list[Goal]:
    """Issue 18's: packed entries end to end, in the worker and in the publisher."""
    from digitstream.benchmarks import packed

    rate, publish = report["rates"][packed.E2E_PACKED], report["rates"][packed.PUB_PACKED]
    passes = report["passes"]
    return [
        Goal(f"end to end, {passes} passes: packed vs classic entries", f">= {packed.GOAL_E2E_SPEEDUP:g}x",
             f"{report['e2e_speedup']:.2f}x", report["goals_met"]["e2e speedup"]),
        Goal(f"end to end, {passes} passes, packed entries", f">= {packed.GOAL_E2E_RATE:,} samples/s",
             f"{rate:,.0f}/s", report["goals_met"]["e2e rate"]),
        Goal("worker ingest of packed entries vs the learner alone (softmax)", f">= {packed.GOAL_INGEST_RATIO:.0%}",
             f"{report['ingest_ratio']:.0%}", report["goals_met"]["ingest ratio"]),
        Goal("publisher, packed entries", f">= {packed.GOAL_PUBLISHER_RATE:,} samples/s", f"{publish:,.0f}/s",
             report["goals_met"]["publisher rate"]),
    ]  # fmt: skip


def upload_goals(report: dict[str, Any]) -> list[Goal]:
    """Issue 14's: what an anonymous upload or batch may cost, /predict's p99 under an upload flood."""
    from digitstream.benchmarks import uploads

    up, met = report["uploads"], uploads.goals_met(report)
    out = [
        Goal(
            "crafted upload: extra peak RSS of the API (worst file)",
            f"<= {uploads.GOAL_UPLOAD_MB:g} MB",
            f"{up['worst_extra_peak_mb']:.0f} MB",
            met["upload_memory"],
        ),
        Goal(
            "crafted upload: CPU of the API (worst file, median)",
            f"<= {uploads.GOAL_UPLOAD_CPU_MS:g} ms",
            f"{up['worst_cpu_ms']:.0f} ms",
            met["upload_cpu"],
        ),
    ]
    if "batches" in report:
        b = report["batches"]
        out.append(
            Goal(
                f"{b['in_flight']} maximum JSON batches at once: extra peak RSS",
                f"<= {uploads.GOAL_BATCH_MB:g} MB, refusals with Retry-After",
                f"{b['extra_peak_mb']:.0f} MB, {b['statuses']}",
                met["batch_memory"],
            )
        )
    if "flood" in report:
        p99 = report["flood"]["under_uploads"]["p99_ms"]
        out.append(
            Goal(
                f"POST /predict p99 while {uploads.UPLOADERS} connections post uploads",
                f"<= {uploads.GOAL_P99_MS:g} ms",
                f"{p99:.1f} ms",
                met["p99_under_uploads"],
            )
        )
    return out


def fuzz_goals(report: dict[str, Any]) -> list[Goal]:
    """Issue 13's: adversarial entries through the codec and a real worker, and what 1 % of them costs."""
    from digitstream.benchmarks import fuzz_stream

    c, w, t = report["codec"], report["worker"], report["throughput"]
    met = list(fuzz_stream.goals(report).values())
    return [
        Goal("fuzzer: entries through the codec, verdicts off the oracle", ">= 100,000, 0 exceptions, 0 off",
             f"{c['entries']:,}, {c['exceptions']}, {c['mismatches']}", met[0]),
        Goal("fuzzer: entries through a real worker, worker exits", ">= 5,000, 0 exits",
             f"{w['entries']:,}, {w['exits_while_running']}", met[1]),
        Goal("fuzzer: bad entries dead-lettered exactly once", "all of them, no valid one",
             f"{w['bad_dead_lettered_once']:,} of {w['bad']:,}, {w['valid_dead_lettered']} valid", met[2]),
        Goal("fuzzer: dead letters written by the snapshot passing them", "at every snapshot",
             f"{w['snapshot_violations']} off in {w['snapshots_observed']}", met[3]),
        Goal("fuzzer: weights equal the valid entries' alone", "bit for bit", str(w["weights_equal"]), met[4]),
        Goal("throughput with 1 % bad entries vs clean", f">= {fuzz_stream.GOAL_RATIO:.0%}", f"{t['ratio']:.0%}",
             met[5]),
    ]  # fmt: skip


def headline(report: dict[str, Any]) -> str:
    """The few numbers the README shows, each beside its baseline from the same run."""
    from digitstream.benchmarks import learners, worker_ingest

    named = {name: r for name, r in learners.by_name(report["learners"]).items() if r.seconds}
    softmax, mlp = named[learners.SOFTMAX], named[learners.MLP]
    river = named.get("river SoftmaxRegression")
    river_rate = river.rate if river else float("nan")
    sklearn = named.get("scikit-learn MLPClassifier.partial_fit")
    sklearn_rate = sklearn.rate if sklearn else float("nan")
    passes = report["learners"]["mlp_passes"]
    ingest, pub, svc = report["worker_ingest"], report["publisher"], report["service"]
    ceiling = ingest["rates"]["raw read + decode (ceiling)"]
    worker_rate = ingest["rates"][worker_ingest.WORKER]
    medians = svc["predict"]["medians"]
    trivial, predict = medians["GET /healthz (trivial)"], medians["POST /predict"]
    rows = [
        "| what | this project | baseline, same run | ratio |",
        "| --- | ---: | ---: | ---: |",
        f"| learner, softmax rule (samples/s) | {softmax.rate:,.0f} | river SoftmaxRegression "
        f"{river_rate:,.0f} | {softmax.rate / river_rate:,.0f}x |",
        f"| accuracy, one in-order pass (prequential / test) | {softmax.prequential or 0:.2%} / "
        f"{softmax.test or 0:.2%} | | |",
        f"| learner, mlp rule (samples/s) | {mlp.rate:,.0f} | scikit-learn MLPClassifier.partial_fit "
        f"{sklearn_rate:,.0f} | {mlp.rate / sklearn_rate:,.0f}x |",
        f"| mlp accuracy, one pass (prequential / test); test after {len(passes)} passes | "
        f"{mlp.prequential or 0:.2%} / {mlp.test or 0:.2%}; {passes[-1]:.2%} | | |",
        f"| worker ingest, mlp rule (samples/s) | {ingest['rates'][worker_ingest.MLP_WORKER]:,.0f} | its learner "
        f"alone {ingest['rates'][worker_ingest.MLP_LEARNER]:,.0f} | {ingest['mlp_worker_ratio']:.0%} |",
        f"| worker ingest (samples/s) | {worker_rate:,.0f} | raw XREAD + decode {ceiling:,.0f} | "
        f"{worker_rate / ceiling:.0%} |",
        f"| publisher (samples/s) | {pub['publisher_per_s']:,.0f} | raw pipelined XADD "
        f"{pub['raw_pipelined_xadd_per_s']:,.0f} | {pub['ratio']:.0%} |",
        f"| POST /predict (requests/s, {svc['connections']} connections) | {predict['rps']:,.0f} | GET /healthz "
        f"{trivial['rps']:,.0f} | {predict['rps'] / trivial['rps']:.0%} |",
        f"| POST /predict latency p50 / p99 (ms) | {predict['p50_ms']:.1f} / {predict['p99_ms']:.1f} | "
        f"{trivial['p50_ms']:.1f} / {trivial['p99_ms']:.1f} | |",
        f"| POST /predict/batch, raw bytes (images/s) | "
        f"{svc['batch']['binary (N x 784 bytes)']['images_per_s']:,.0f} | | |",
        f"| freshness, XADD -> served (median s) | {svc['freshness']['median_s']:.3f} | | |",
    ]
    return "\n".join(rows)


def goals_table(items: list[Goal]) -> str:
    rows = ["| goal | target | measured | verdict |", "| --- | --- | ---: | --- |"]
    rows += [f"| {g.what} | {g.target} | {g.measured} | {'met' if g.met else '**NOT met**'} |" for g in items]
    return "\n".join(rows)


def write_plots(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """The PNGs under ``out/docs/bench``; returns them by name."""
    from digitstream.benchmarks import plots, service  # matplotlib is an optional dependency (extra "bench")

    directory = out / PLOTS
    results = report["learners"]["results"]
    served = report["service"]["served_model"]["metrics"].get("learning_curve") or []
    return {
        "throughput": plots.learner_throughput(results, directory / "learner_throughput.png"),
        "accuracy": plots.accuracy_against_speed(results, directory / "accuracy_vs_speed.png"),
        "curves": plots.learning_curves(results, served, directory / "learning_curves.png"),
        "freshness": plots.freshness(
            report["service"]["freshness"]["seconds"], service.GOAL_FRESHNESS_S, directory / "freshness.png"
        ),
    }


def markdown(report: dict[str, Any], pictures: dict[str, Path], out: Path, command: str) -> str:
    """BENCHMARKS.md."""
    from digitstream.benchmarks import fuzz_stream, learners, packed, publisher, service, uploads, worker_ingest

    m = report["machine"]
    items = goals(report)
    met = sum(g.met for g in items)
    check = report["served_curve_check"]
    versions = ", ".join(f"{name} {v}" for name, v in m["versions"].items())
    memory = f"{m['memory_gib']:.1f} GiB" if m["memory_gib"] else "unknown"
    link = {name: path.relative_to(out).as_posix() for name, path in pictures.items()}
    ingest, pub, svc = report["worker_ingest"], report["publisher"], report["service"]
    learner_report = report["learners"]
    quick_note = (
        "\n> **Quick run** (`--quick`, small sizes, one repetition): a smoke test, not a measurement.\n"
        if report["quick"]
        else ""
    )
    curve_line = (
        f"The worker's own learning curve, as served by `GET /model` (`metrics.learning_curve`, what the "
        f"dashboard draws), is plotted as circles; at its {check['points']} points it differs from the "
        f"learner's prequential accuracy on the same {check['samples']:,} samples by at most "
        f"{check['max_difference']:.1e} (the worker rounds them to 6 decimals)."
        if check["max_difference"] is not None
        else "The served model reported no learning-curve points."
    )
    return f"""# digitstream benchmarks

Produced by `{command}` on {report["date"]} in {report["elapsed_s"] / 60:.1f} minutes; everything ran
side by side on this machine against one embedded redis-server.
{quick_note}
**Machine:** {m["cpu"]}, {m["cores"]} cores, {memory}; Python {m["python"]} on {m["platform"]}.
Load average (1 min) before / after: {report["load_before"]:.2f} / {report["load_after"]:.2f} (other processes
count too: on a busy machine the ratios, measured in alternation, mean more than the absolute numbers).

**Versions:** {versions}.

## Headline

{headline(report)}

Plots: [learner throughput]({link["throughput"]}), [learning curves]({link["curves"]}),
[accuracy against speed]({link["accuracy"]}), [served-model freshness]({link["freshness"]}).

## Goals: {met} of {len(items)} met

{goals_table(items)}

## Learners

The MNIST training stream ({learner_report["train_size"]:,} samples) in order, one pass; each sample is
predicted before it is learned (prequential accuracy). Medians of {learner_report["repeats"]} repetitions
taken in alternation (the slow learners see a prefix of the stream and run fewer times).

{learners.table(learner_report)}

![learner throughput, log scale]({link["throughput"]})

![prequential accuracy against samples learned]({link["curves"]})

![prequential accuracy against samples per second]({link["accuracy"]})

{curve_line}

## Worker ingest

{ingest["samples"]:,} samples in one stream, batch size {ingest["batch_size"]}, hiredis
{"on" if ingest["hiredis"] else "off"}, {ingest["repeats"]} runs of each case in alternation.
The ceiling is a bare XREAD loop turning each batch into numpy arrays; the worker also validates,
learns, keeps its metrics and writes snapshots.

{worker_ingest.table(ingest)}

## Publisher

{publisher.table(pub)}

## Packed entries

Classic entries (one sample each) against packed ones (`pixels` = N x 784 bytes, `labels` = N
digits); see `benchmarks/packed.py` for what each case times.

{packed.table(report["packed"])}

## Service

A `digitstream worker` and a `digitstream serve` in their own processes, the load from a third.

{service.report_text(svc)}

![served-model freshness]({link["freshness"]})

## What an anonymous request costs

Crafted uploads (`benchmarks/hostile_images.py`: small files of huge images, every PNG and JPEG
mode, refused formats), maximum JSON batches and /predict under an upload flood, measured on a
`digitstream serve` process from /proc.

{uploads.report_text(report["uploads"])}

## Stream fuzzer

Adversarial stream entries (`benchmarks/fuzz_entries.py`: hostile JSON of every kind, byte garbage,
thousands of fields, fields of >= 10 MB) through the codec, a real worker process, and a burst
worker's throughput with 1 % of them (`benchmarks/fuzz_stream.py`).

```text
{fuzz_stream.report_text(report["fuzz"])}
```

## Reproduce

```bash
pip install -e '.[bench]'
digitstream bench                 # or: python -m digitstream.benchmarks.suite; add --quick for a smoke test
```

Each part also runs alone: `python benchmarks/learners.py`, `python benchmarks/worker_ingest.py`,
`python benchmarks/publisher.py`, `python benchmarks/service.py`, `python benchmarks/uploads.py`,
`python -m digitstream.benchmarks.fuzz_stream`. The endurance run is
`python -m digitstream.benchmarks.endurance --minutes 10` (see docs/benchmarks.md).
"""


# -- command line -----------------------------------------------------------------------------------


@click.command("bench")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="MNIST IDX directory  [default: $DIGITSTREAM_TEST_DATA, else ../shared/data/mnist, else the cache]",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="where BENCHMARKS.md and docs/bench/*.png go  [default: the checkout's root, else .]",
)
@click.option("--quick", is_flag=True, help="small sizes, one repetition: a smoke test, not a measurement")
@click.option("--strict", is_flag=True, help="exit 1 when a goal is not met")
def bench_command(data_dir: Path | None, out_dir: Path | None, quick: bool, strict: bool) -> None:
    """Run every benchmark side by side (learners, worker, publisher, service) and write BENCHMARKS.md + plots."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise click.UsageError("the plots need matplotlib: pip install 'digitstream[bench]'") from None
    from digitstream.datasets import find_mnist

    data = find_mnist(data_dir) if data_dir else default_data_dir()
    out = (out_dir or default_out_dir()).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report = run(data, Sizes.for_run(quick), echo=click.echo)
    pictures = write_plots(report, out)
    command = "digitstream bench" + (" --quick" if quick else "")
    (out / "BENCHMARKS.md").write_text(markdown(report, pictures, out, command))
    items = goals(report)
    click.echo(f"\n{goals_table(items)}\n")
    click.echo(f"wrote {out / 'BENCHMARKS.md'} and {len(pictures)} plots in {out / PLOTS}")
    if strict and not all(g.met for g in items):
        sys.exit(1)


def main() -> None:
    bench_command(prog_name="python -m digitstream.benchmarks.suite")


if __name__ == "__main__":
    main()
