"""Deciding which directory the MNIST files come from: --data, the environment, the cache, or a download."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from .download import DEFAULT_MIRRORS, OFFICIAL_FILES, RemoteFile, download_mnist
from .idx import DATA_ENV_VAR, MNIST_FILE_STEMS, DatasetError, missing_mnist_files

__all__ = ["DATA_ENV_VAR", "default_cache_dir", "find_mnist"]


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/digitstream/mnist``, or ``~/.cache/digitstream/mnist`` (XDG base-dir rules)."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "digitstream" / "mnist"


def find_mnist(
    data_dir: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cache_dir: Path | None = None,
    download: bool = True,
    mirrors: Sequence[str] = DEFAULT_MIRRORS,
    files: Sequence[RemoteFile] = OFFICIAL_FILES,
) -> Path:
    """The directory holding the four MNIST files, first match wins.

    1. ``data_dir`` (e.g. from ``--data``): it must hold the files; a wrong path is an error, never
       silently replaced by another source.
    2. ``$DIGITSTREAM_DATA_DIR``: same rule.
    3. The cache directory, if it already holds the files.
    4. A download into the cache directory, if ``download`` is true.
    """
    env = os.environ if env is None else env
    if data_dir is not None:
        return _require_files(Path(data_dir).expanduser(), "the data directory given (--data)")
    from_env = env.get(DATA_ENV_VAR, "")
    if from_env:
        return _require_files(Path(from_env).expanduser(), f"{DATA_ENV_VAR}={from_env}")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(env)
    missing = missing_mnist_files(cache)
    if not missing:
        return cache
    if not download:
        raise DatasetError(
            f"MNIST data not found: {DATA_ENV_VAR} is not set and the cache directory {cache} lacks "
            f"{', '.join(missing)} (automatic download is off).\n{_how_to_fix(cache)}"
        )
    try:
        return download_mnist(cache, mirrors=mirrors, files=files)
    except DatasetError as exc:
        raise DatasetError(f"{exc}\n\n{_how_to_fix(cache)}") from exc


def _require_files(directory: Path, source: str) -> Path:
    """The directory itself if it holds all four files, else a DatasetError naming what is missing."""
    if not directory.is_dir():
        problem = f"{directory} is not a directory"
    else:
        missing = missing_mnist_files(directory)
        if not missing:
            return directory
        problem = f"{directory} lacks {', '.join(missing)}"
    raise DatasetError(
        f"MNIST data not found where {source} says: {problem}. It must hold the four MNIST IDX files "
        f"{_expected_names()} (gzipped or not). Fix the path, or leave it out to use the cache "
        "directory and the automatic download."
    )


def _expected_names() -> str:
    return ", ".join(stem + ".gz" for stem in MNIST_FILE_STEMS)


def _how_to_fix(cache: Path) -> str:
    return (
        "To fix this, do one of:\n"
        f"  - pass --data DIR, where DIR is a directory holding the 4 MNIST IDX files {_expected_names()}"
        " (gzipped or not);\n"
        f"  - set {DATA_ENV_VAR}=DIR for such a directory;\n"
        f"  - run `digitstream data download` to download them into {cache}."
    )
