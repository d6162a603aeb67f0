"""``digitstream data``: get the MNIST files (download into the cache) and say where they are found."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from digitstream.clients.terminal import ProgressLine
from digitstream.datasets import DEFAULT_MIRRORS, DatasetError, default_cache_dir, download_mnist, find_mnist

from ._common import InputError, RuntimeFailure


@click.group("data")
def data() -> None:
    """The MNIST data: download it, or show which directory will be used."""


@data.command("download")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="where to put the files [default: the cache, ~/.cache/digitstream/mnist]",
)
@click.option(
    "--mirror",
    "mirrors",
    multiple=True,
    metavar="URL",
    help="base URL to fetch from, tried in the order given (repeatable) [default: the official mirrors]",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="seconds without data before a mirror counts as failed",
)
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
def download(directory: Path | None, mirrors: tuple[str, ...], timeout: float, quiet: bool) -> None:
    """Download the four MNIST files (checksummed, resumable) and print their directory.

    Files already there and intact are not fetched again.
    """
    # The command reports mirror failures itself, in its error message: keep the library's warnings quiet.
    logging.getLogger("digitstream.datasets").addHandler(logging.NullHandler())
    target = directory or default_cache_dir()
    bars: dict[str, ProgressLine] = {}

    def progress(name: str, done: int, total: int | None) -> None:
        if quiet:
            return
        if name not in bars:  # a new file: close the previous bar
            for bar in bars.values():
                bar.finish()
            bars.clear()
            bars[name] = ProgressLine(total, stream=sys.stderr, unit="bytes")
        bars[name].update(done, name)

    try:
        found = download_mnist(target, mirrors=mirrors or DEFAULT_MIRRORS, timeout=timeout, progress=progress)
    except DatasetError as exc:
        raise RuntimeFailure(str(exc)) from None
    finally:
        for bar in bars.values():
            bar.finish()
    click.echo(str(found))


@data.command("path")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help="a directory to check instead")
def path(data_dir: Path | None) -> None:
    """Print the directory the other commands will read MNIST from (never downloads).

    The order is: --data, then $DIGITSTREAM_DATA_DIR, then the cache. Exits 2 if none holds the files.
    """
    try:
        click.echo(str(find_mnist(data_dir, download=False)))
    except DatasetError as exc:
        raise InputError(str(exc)) from None
