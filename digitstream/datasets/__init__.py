"""MNIST data: IDX reading/writing, verified downloads from mirrors, and locating the data directory."""

from .download import (
    DEFAULT_MIRRORS,
    OFFICIAL_FILES,
    ProgressCallback,
    RemoteFile,
    download_mnist,
    verify_file,
)
from .idx import (
    MNIST_FILE_STEMS,
    DatasetError,
    Mnist,
    Split,
    load_mnist,
    missing_mnist_files,
    read_idx_images,
    read_idx_labels,
    write_idx_images,
    write_idx_labels,
)
from .locate import DATA_ENV_VAR, default_cache_dir, find_mnist

__all__ = [
    "DATA_ENV_VAR",
    "DEFAULT_MIRRORS",
    "MNIST_FILE_STEMS",
    "OFFICIAL_FILES",
    "DatasetError",
    "Mnist",
    "ProgressCallback",
    "RemoteFile",
    "Split",
    "default_cache_dir",
    "download_mnist",
    "find_mnist",
    "load_mnist",
    "missing_mnist_files",
    "read_idx_images",
    "read_idx_labels",
    "verify_file",
    "write_idx_images",
    "write_idx_labels",
]
