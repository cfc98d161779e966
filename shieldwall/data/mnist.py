"""MNIST and Fashion-MNIST from their IDX files (``.gz`` or decompressed), local files only.

Expected in the data folder (see :mod:`shieldwall.data.files` for how the folder is found)::

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]

``train-images.idx3-ubyte`` (a dot instead of the last dash) is accepted too, and torchvision's
``<root>/MNIST/raw/`` layout. Decompressed files are preferred when both are present. Magic
numbers, dimensions and lengths are checked. Images come back as float32 ``(N, 1, 28, 28)``,
``(pixel / 255 - mean) / std`` with the usual constants (MNIST 0.1307/0.3081, Fashion-MNIST
0.2860/0.3530); labels as int64.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from shieldwall.data import DATASETS, Dataset
from shieldwall.data.files import find_file, locate, missing_file_error
from shieldwall.data.pixels import normalize_uint8

__all__ = [
    "read_idx",
    "idx_file_names",
    "load_mnist",
    "load_fashion_mnist",
    "MNIST_FOLDERS",
]

# IDX type codes (third magic byte) → numpy dtype (multi-byte types are big-endian).
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

MNIST_FOLDERS = ("mnist", "MNIST", "mnist_dir")
FASHION_FOLDERS = ("fashion-mnist", "fashion_mnist", "FashionMNIST", "fmnist")

# (split part, file role) → (prefix, suffix, expected magic)
_FILES = {
    "train_x": ("train-images", "idx3-ubyte", 0x0803),
    "train_y": ("train-labels", "idx1-ubyte", 0x0801),
    "test_x": ("t10k-images", "idx3-ubyte", 0x0803),
    "test_y": ("t10k-labels", "idx1-ubyte", 0x0801),
}


def idx_file_names(prefix: str, suffix: str) -> tuple[str, ...]:
    """Accepted spellings, decompressed first: ``train-images-idx3-ubyte``, ``…​.gz``, ``.idx3``."""
    plain = (f"{prefix}-{suffix}", f"{prefix}.{suffix}")
    return (*plain, *(p + ".gz" for p in plain))


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as exc:  # truncated or corrupt stream
            raise ValueError(f"{path}: damaged gzip file ({exc}); replace it with a good "
                             "copy") from None
    return data


def read_idx(path: str | Path, expect_magic: int | None = None) -> np.ndarray:
    """Parse one IDX file (gzip-compressed or not) into a read-only numpy array.

    Args:
        path: the file.
        expect_magic: if given, the 4-byte magic number it must have (``0x0803`` for images,
            ``0x0801`` for labels).

    Raises:
        ValueError: bad magic number, unknown type code or a length that does not match the header.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (magic {data[:4].hex() or 'empty'})")
    magic = int.from_bytes(data[:4], "big")
    if expect_magic is not None and magic != expect_magic:
        raise ValueError(f"{path}: IDX magic 0x{magic:08x}, expected 0x{expect_magic:08x}")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    count = math.prod(dims)
    if len(data) - header != count * dtype.itemsize:
        raise ValueError(
            f"{path}: IDX header says {dims} ({count * dtype.itemsize} bytes of data) but the file "
            f"holds {len(data) - header}"
        )
    return np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)


def _images(arr: np.ndarray, mean: float, std: float) -> Tensor:
    return normalize_uint8(arr, mean, std).unsqueeze_(1)


def _labels(arr: np.ndarray, path: Path, num_classes: int) -> Tensor:
    y = torch.from_numpy(arr.astype(np.int64))
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{path}: labels outside [0, {num_classes})")
    return y


def _holds_train_images(folder: Path) -> bool:
    prefix, suffix, _ = _FILES["train_x"]
    return find_file(folder, idx_file_names(prefix, suffix)) is not None


def load_idx_dataset(
    name: str,
    root: str | None,
    folder_names: tuple[str, ...],
    mean: float,
    std: float,
    num_classes: int = 10,
) -> Dataset:
    """Read the four IDX files of an MNIST-like data set and normalise the images."""
    expected = [idx_file_names(p, s)[0] + "[.gz]" for p, s, _ in _FILES.values()]
    folder = locate(name, root, folder_names, _holds_train_images, expected)
    arrays: dict[str, Tensor] = {}
    for key, (prefix, suffix, magic) in _FILES.items():
        names = idx_file_names(prefix, suffix)
        path = find_file(folder, names)
        if path is None:
            raise missing_file_error(name, folder, names)
        arr = read_idx(path, expect_magic=magic)
        if key.endswith("_x"):
            if arr.ndim != 3:
                raise ValueError(f"{path}: expected (N, H, W) images, got shape {arr.shape}")
            arrays[key] = _images(arr, mean, std)
        else:
            arrays[key] = _labels(arr, path, num_classes)
    for split in ("train", "test"):
        nx, ny = len(arrays[f"{split}_x"]), len(arrays[f"{split}_y"])
        if nx != ny:
            raise ValueError(f"{name}: {split} split has {nx} images but {ny} labels ({folder})")
    return Dataset(
        name,
        arrays["train_x"],
        arrays["train_y"],
        arrays["test_x"],
        arrays["test_y"],
        num_classes,
    )


@DATASETS.register("mnist", folders=MNIST_FOLDERS, mean=(0.1307,), std=(0.3081,))
def load_mnist(root: str | None = None) -> Dataset:
    """MNIST (60,000 + 10,000 handwritten digits, 1×28×28) from IDX files under ``root``."""
    return load_idx_dataset("mnist", root, MNIST_FOLDERS, 0.1307, 0.3081)


@DATASETS.register(
    "fashion_mnist",
    aliases=("fashion-mnist", "fmnist", "FashionMNIST"),
    folders=FASHION_FOLDERS,
    mean=(0.2860,),
    std=(0.3530,),
)
def load_fashion_mnist(root: str | None = None) -> Dataset:
    """Fashion-MNIST (60,000 + 10,000 Zalando article images, 1×28×28) from IDX files."""
    return load_idx_dataset("fashion_mnist", root, FASHION_FOLDERS, 0.2860, 0.3530)
