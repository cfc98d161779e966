"""Finding a data set's files on disk: root resolution shared by every file-based reader.

``data_args.data_cache_dir`` (the ``root`` a reader gets) may be

* the folder that holds the data set's files (``../shared/datasets/mnist``),
* a parent that holds them under one of the data set's usual folder names
  (``../shared/datasets`` → ``mnist/``; names are compared ignoring case, ``-`` and ``_``, so
  ``FashionMNIST``, ``fashion-mnist`` and ``fashion_mnist`` are one name),
* torchvision's layout (``<root>/MNIST/raw/``), i.e. any of the above with a ``raw/`` inside.

The search goes at most two named folders deep (``<root>/cifar10/cifar-10-batches-py``). ``~`` is
expanded; ``root=None`` means ``./data`` (:data:`DEFAULT_ROOT`). When nothing fits, a
:class:`~shieldwall.data.DataNotFoundError` names the data set, every folder looked in, the file
names expected there and the config key to set.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from shieldwall.data import DataNotFoundError

__all__ = [
    "DEFAULT_ROOT",
    "HINT",
    "candidate_folders",
    "expand_root",
    "find_file",
    "locate",
    "missing_file_error",
    "fold_name",
]

#: Where readers look when no ``data_cache_dir`` is configured.
DEFAULT_ROOT = "data"

#: How to point shieldwall at the files; appended to every "not found" message.
HINT = (
    "set data_args.data_cache_dir to the folder holding the files or to its parent "
    "(e.g. --set data_args.data_cache_dir=../shared/datasets)"
)


def fold_name(name: str) -> str:
    """Folder-name key: lower case without ``-``, ``_``, ``.`` or spaces."""
    return "".join(ch for ch in name.lower() if ch not in "-_. ")


def expand_root(root: str | os.PathLike[str] | None) -> Path:
    """``root`` with ``~`` and environment variables expanded (``None`` → :data:`DEFAULT_ROOT`)."""
    text = DEFAULT_ROOT if root is None else os.fspath(root)
    return Path(os.path.expandvars(os.path.expanduser(text)))


def candidate_folders(root: Path, folder_names: Iterable[str], depth: int = 2) -> list[Path]:
    """``root``, its children named like the data set (to ``depth`` levels) and their ``raw/``.

    Order: shallowest first, then alphabetical, so the result is deterministic.
    """
    keys = {fold_name(n) for n in folder_names}
    found: list[Path] = []
    level = [root]
    for d in range(depth + 1):
        next_level: list[Path] = []
        for folder in level:
            found.append(folder)
            raw = folder / "raw"
            if raw.is_dir():
                found.append(raw)
            if d < depth and folder.is_dir():
                try:
                    children = sorted(folder.iterdir())
                except OSError:
                    continue
                next_level += [c for c in children if c.is_dir() and fold_name(c.name) in keys]
        level = next_level
    unique: list[Path] = []
    for f in found:
        if f not in unique:
            unique.append(f)
    return unique


def find_file(folder: Path, names: Sequence[str]) -> Path | None:
    """The first of ``names`` that is a file inside ``folder``, else ``None``."""
    for name in names:
        path = folder / name
        if path.is_file():
            return path
    return None


def _format_expected(expected: Sequence[str | Sequence[str]]) -> str:
    parts = []
    for item in expected:
        if isinstance(item, str):
            parts.append(item)
        else:
            parts.append(" or ".join(item))
    return "; ".join(parts)


def locate(
    dataset: str,
    root: str | os.PathLike[str] | None,
    folder_names: Iterable[str],
    holds_data: Callable[[Path], bool],
    expected: Sequence[str | Sequence[str]],
) -> Path:
    """The folder holding ``dataset``'s files under ``root``.

    Args:
        dataset: data set name for messages.
        root: the configured ``data_cache_dir`` (``None`` → :data:`DEFAULT_ROOT`).
        folder_names: the data set's usual folder names (``mnist``, ``MNIST``…).
        holds_data: predicate telling whether a folder holds the data set.
        expected: the file names expected in that folder, for the error message (an inner
            sequence lists alternatives).

    Raises:
        DataNotFoundError: ``root`` does not exist or no candidate folder holds the files.
    """
    folder_names = tuple(folder_names)
    base = expand_root(root)
    shown = str(base) if base.is_absolute() else f"{base} (= {base.absolute()})"
    if root is None:
        shown += " (the default: no data_cache_dir given)"
    if not base.is_dir():
        raise DataNotFoundError(
            f"{dataset}: data folder {shown} does not exist; expected the files "
            f"{_format_expected(expected)} in it or in a sub-folder named like "
            f"{_folder_examples(folder_names)}; {HINT}"
        )
    folders = candidate_folders(base, folder_names)
    foreign = _foreign_keys(folder_names)
    skipped = []
    for folder in folders:
        if holds_data(folder):
            named = folder.parent if folder.name == "raw" else folder
            if fold_name(named.name) in foreign:  # ../mnist when fashion_mnist was asked for
                skipped.append(f"{folder} (named for another data set)")
                continue
            return folder
    looked = ", ".join(str(f) for f in folders)
    note = f"; skipped {', '.join(skipped)}" if skipped else ""
    raise DataNotFoundError(
        f"{dataset}: no data files found under {shown}; looked in {looked} (and for sub-folders "
        f"named like {_folder_examples(folder_names)}) for {_format_expected(expected)}{note}; "
        f"{HINT}"
    )


def _foreign_keys(folder_names: tuple[str, ...]) -> set[str]:
    """Folder-name keys of other registered data sets (their ``folders`` meta), minus ours.

    Same-named files (MNIST and Fashion-MNIST share theirs) would otherwise let a folder named for
    one data set be read as the other.
    """
    from shieldwall.data import DATASETS

    ours = {fold_name(n) for n in folder_names}
    theirs = {fold_name(n) for e in DATASETS for n in e.meta.get("folders", ())}
    return theirs - ours


def missing_file_error(dataset: str, folder: Path, names: Sequence[str]) -> DataNotFoundError:
    """The error for a data folder that lacks one required file (any of ``names``)."""
    return DataNotFoundError(
        f"{dataset}: folder {folder} holds part of the data set but not {' or '.join(names)}; "
        f"{HINT}"
    )


def _folder_examples(folder_names: Iterable[str]) -> str:
    return ", ".join(f"{n}/" for n in folder_names)
