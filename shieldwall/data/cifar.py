"""CIFAR-10 and CIFAR-100 from the "python version" pickle batches, local files only.

Expected (see :mod:`shieldwall.data.files` for how the folder is found):

* CIFAR-10: ``cifar-10-batches-py/data_batch_1`` … ``data_batch_5`` and ``test_batch``, each a
  pickled dict with ``b"data"`` (N×3072 uint8: the R, G and B planes, row-major) and
  ``b"labels"``; or only the archive ``cifar-10-python.tar.gz``.
* CIFAR-100: ``cifar-100-python/train`` and ``test`` with ``b"fine_labels"`` (100 classes); or
  only ``cifar-100-python.tar.gz``.

Archives are read in memory with :mod:`tarfile` (nothing is extracted to disk). Batches are
unpickled with a restricted unpickler that admits numpy arrays only, so a tampered file cannot run
code. Images come back as float32 ``(N, 3, 32, 32)`` normalised per channel with the standard
constants (FedML's): CIFAR-10 mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616);
CIFAR-100 mean (0.5071, 0.4865, 0.4409), std (0.2673, 0.2564, 0.2762).
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from shieldwall.data import DATASETS, DataNotFoundError, Dataset
from shieldwall.data.files import find_file, locate, missing_file_error
from shieldwall.data.pixels import normalize_uint8

__all__ = ["load_cifar10", "load_cifar100", "read_cifar_batch", "CIFAR10_MEAN", "CIFAR10_STD"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

CIFAR10_FOLDERS = ("cifar-10-batches-py", "cifar10", "cifar-10", "CIFAR10", "cifar")
CIFAR100_FOLDERS = ("cifar-100-python", "cifar100", "cifar-100", "CIFAR100", "cifar")

# Globals a pickled numpy array may reference (numpy 1 and numpy 2 module spellings), plus
# ``_codecs.encode``, which Python 3 uses to pickle ``bytes`` at protocol 2 (harmless: a codec).
_ALLOWED = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals needed to rebuild arrays."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module.split(".", 2)[2]  # avoid numpy 2's deprecation shim
        return super().find_class(module, name)


def read_cifar_batch(data: bytes, source: str = "<bytes>") -> dict[str, Any]:
    """Unpickle one CIFAR batch; keys come back as ``str`` whether pickled as bytes or str."""
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ValueError(f"{source}: not a CIFAR python batch ({exc})") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _batch_arrays(batch: dict[str, Any], label_key: str, source: str) -> tuple[np.ndarray, Tensor]:
    if "data" not in batch or label_key not in batch:
        raise ValueError(f"{source}: CIFAR batch lacks 'data' or {label_key!r}")
    x = np.asarray(batch["data"], dtype=np.uint8)
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{source}: expected data of shape (N, 3072), got {x.shape}")
    y = torch.as_tensor(np.asarray(batch[label_key], dtype=np.int64).reshape(-1))
    if len(y) != len(x):
        raise ValueError(f"{source}: {len(x)} images but {len(y)} labels")
    return x.reshape(-1, 3, 32, 32), y


def _read_batches(
    name: str, folder: Path, files: list[str], archive_names: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """The named batches from ``folder``, or from the archive there if the files are absent."""
    if all((folder / f).is_file() for f in files):
        return {f: read_cifar_batch((folder / f).read_bytes(), str(folder / f)) for f in files}
    archive = find_file(folder, archive_names)
    if archive is None:
        missing = next(f for f in files if not (folder / f).is_file())
        raise missing_file_error(name, folder, [missing, *archive_names])
    out: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in files and base not in out:
                    handle = tar.extractfile(member)
                    if handle is not None:
                        out[base] = read_cifar_batch(handle.read(), f"{archive}:{member.name}")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:  # truncated or corrupt
        raise ValueError(f"{archive}: damaged archive ({exc}); replace it with a good "
                         "copy") from None
    lacking = [f for f in files if f not in out]
    if lacking:
        raise missing_file_error(name, archive, lacking)
    return out


def _load_cifar(
    name: str,
    root: str | None,
    folders: tuple[str, ...],
    train_files: list[str],
    test_files: list[str],
    archive_names: tuple[str, ...],
    label_key: str,
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> Dataset:
    files = [*train_files, *test_files]

    def has_files(folder: Path) -> bool:
        return all((folder / f).is_file() for f in (train_files[0], test_files[0]))

    def has_archive(folder: Path) -> bool:
        return find_file(folder, archive_names) is not None

    expected = [", ".join(files), archive_names]
    try:  # extracted batches anywhere beat an archive (torchvision keeps both side by side)
        folder = locate(name, root, folders, has_files, expected)
    except DataNotFoundError:
        folder = locate(name, root, folders, has_archive, expected)
    batches = _read_batches(name, folder, files, archive_names)
    splits = []
    for split_files in (train_files, test_files):
        parts = [_batch_arrays(batches[f], label_key, f) for f in split_files]
        x = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        y = torch.cat([p[1] for p in parts])
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(f"{name}: labels outside [0, {num_classes}) in {folder}")
        splits.append((normalize_uint8(x, mean, std), y))
    (train_x, train_y), (test_x, test_y) = splits
    return Dataset(name, train_x, train_y, test_x, test_y, num_classes)


@DATASETS.register(
    "cifar10",
    aliases=("cifar-10", "CIFAR10"),
    folders=CIFAR10_FOLDERS,
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
)
def load_cifar10(root: str | None = None) -> Dataset:
    """CIFAR-10 (50,000 + 10,000 colour images, 3×32×32, 10 classes)."""
    return _load_cifar(
        "cifar10",
        root,
        CIFAR10_FOLDERS,
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        ("cifar-10-python.tar.gz", "cifar-10-python.tar"),
        "labels",
        10,
        CIFAR10_MEAN,
        CIFAR10_STD,
    )


@DATASETS.register(
    "cifar100",
    aliases=("cifar-100", "CIFAR100"),
    folders=CIFAR100_FOLDERS,
    mean=CIFAR100_MEAN,
    std=CIFAR100_STD,
)
def load_cifar100(root: str | None = None) -> Dataset:
    """CIFAR-100 (50,000 + 10,000 colour images, 3×32×32, 100 fine classes)."""
    return _load_cifar(
        "cifar100",
        root,
        CIFAR100_FOLDERS,
        ["train"],
        ["test"],
        ("cifar-100-python.tar.gz", "cifar-100-python.tar"),
        "fine_labels",
        100,
        CIFAR100_MEAN,
        CIFAR100_STD,
    )
