"""``digitstream reproduce-seed``: the original post's experiment, reproduced exactly."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from digitstream.datasets import DatasetError, find_mnist, load_mnist
from digitstream.learner import DeltaRuleLearner, HyperParameters


@click.command("reproduce-seed")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help="directory with the MNIST IDX files")
@click.option("--samples", default=1000, show_default=True, help="training images used, from the first")
@click.option("--epochs", default=5, show_default=True, help="passes over them, in order")
def reproduce_seed(data_dir: Path | None, samples: int, epochs: int) -> None:
    """Train the post's single-layer network (the `seed` rule) and print its figures.

    Raw pixels 0..255, weights row k = 0.0001 * k, delta rule with rate 1e-7. As in the post:
    first a fresh network trained on the first training image alone for 5 epochs, and its scores
    on that image; then one trained in order on the first 1,000 training images for 5 epochs, and
    its accuracy on the full 10,000-image test set.
    """
    try:
        directory = find_mnist(data_dir)
        train = load_mnist(directory, "train")
        test = load_mnist(directory, "test")
    except DatasetError as exc:
        raise click.UsageError(str(exc)) from None
    if not 1 <= samples <= len(train):
        raise click.BadParameter(f"must be 1..{len(train)}", param_hint="--samples")
    single = DeltaRuleLearner(HyperParameters.for_rule("seed"))
    for _ in range(epochs):
        single.learn_many(train.images[:1], train.labels[:1])
    single_scores = single.scores_many(train.images[:1])[0]
    click.echo(f"data: {directory}")
    click.echo(f"1) trained on the first training image (label {int(train.labels[0])}) alone, {epochs} epochs; scores:")
    click.echo("   [" + ", ".join(repr(float(s)) for s in single_scores) + "]")
    click.echo(f"   predicted: {int(np.argmax(single_scores))}")

    learner = DeltaRuleLearner(HyperParameters.for_rule("seed"))
    started = time.perf_counter()
    for _ in range(epochs):
        learner.learn_many(train.images[:samples], train.labels[:samples])
    elapsed = time.perf_counter() - started
    accuracy = float(np.mean(learner.predict_many(test.images) == test.labels))
    rate = samples * epochs / elapsed if elapsed > 0 else float("inf")
    click.echo(f"2) trained on the first {samples} training images, {epochs} epochs, in order:")
    click.echo(f"   {samples * epochs} updates in {elapsed:.4f} s ({rate:,.0f} samples/s)")
    click.echo(f"   test accuracy ({len(test)} images): {accuracy:.2%}")
