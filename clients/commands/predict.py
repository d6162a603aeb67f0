"""``digitstream predict``: ask the service which digit each image shows."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np

from digitstream.clients.prediction import Prediction, PredictionClient
from digitstream.clients.sources import SourceError, load_image, open_image
from digitstream.clients.terminal import bar_chart, format_count, supports_unicode

from ._common import InputError, echo_json, service_client, service_errors, service_options


@click.command("predict")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--as-is", is_flag=True, help="send the pixels themselves (28x28 MNIST-style images) instead of uploading the file"
)
@click.option("--json", "as_json", is_flag=True, help="print a JSON list, one object per image")
@service_options
def predict(
    images: tuple[Path, ...],
    as_is: bool,
    as_json: bool,
    url: str | None,
    api_key: str | None,
    timeout: float,
    model_name: str | None = None,
) -> None:
    """Print the digit in each IMAGE (PNG or JPEG) and its probabilities as a bar chart.

    By default each file is uploaded to POST /predict/image, where the service turns it into an
    MNIST-like input (inverting dark ink on paper, cropping, scaling and centring the digit), as
    for uploads from the dashboard. With --as-is the image must already look like MNIST (28x28,
    light ink on black, or dark ink on white which is inverted); its pixels go to POST /predict.

    \b
    Examples:
      digitstream predict seven.png
      digitstream predict digits/*.png --json --url http://127.0.0.1:8000
    """
    prepared: list[np.ndarray | None] = []
    for path in images:  # check every file first: a bad one is an input error before any request
        try:
            if as_is:
                prepared.append(load_image(path))
            else:
                open_image(path).close()
                prepared.append(None)
        except SourceError as exc:
            raise InputError(str(exc)) from None
    results: list[Prediction] = []
    with service_client(url, api_key, timeout, model_name) as client, service_errors():
        for path, pixels in zip(images, prepared, strict=True):
            result = _ask(client, path, pixels)
            results.append(result)
            if not as_json:
                _print_one(path, result)
    if as_json:
        echo_json(
            [
                {
                    "image": str(path),
                    "digit": r.digit,
                    "probabilities": r.probabilities,
                    "model_version": r.model_version,
                    "samples_learned": r.samples_learned,
                    "prediction_id": r.prediction_id,
                }
                for path, r in zip(images, results, strict=True)
            ]
        )


def _ask(client: PredictionClient, path: Path, pixels: np.ndarray | None) -> Prediction:
    if pixels is not None:
        return client.predict(pixels)
    return client.predict_image(path)


def _print_one(path: Path, result: Prediction) -> None:
    click.echo(
        f"{path}: {result.digit}   (model version {result.model_version}, "
        f"{format_count(result.samples_learned)} samples learned)"
    )
    click.echo(bar_chart(result.probabilities, unicode=supports_unicode(sys.stdout), mark=result.digit))
