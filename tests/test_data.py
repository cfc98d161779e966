"""Data set readers on tiny synthetic files in the real formats, and on the real MNIST."""

from __future__ import annotations

import gzip
import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from shieldwall.data import DATASETS, DataNotFoundError, load_dataset
from shieldwall.data.cifar import CIFAR10_MEAN, CIFAR10_STD, read_cifar_batch
from shieldwall.data.files import candidate_folders, fold_name
from shieldwall.data.mnist import read_idx
from shieldwall.data.pixels import normalize_uint8
from shieldwall.data.svhn import SVHN_MEAN, SVHN_STD

# ---------------------------------------------------------------- writers for the real formats


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | arr.ndim
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.tobytes()


def write_idx_set(
    folder: Path, n_train: int = 12, n_test: int = 5, gz: bool = True, dot: bool = False, seed=0
) -> dict[str, np.ndarray]:
    """The four MNIST files with random pixels and labels; returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels": np.arange(n_test, dtype=np.uint8) % 10,
    }
    for prefix, arr in arrays.items():
        suffix = "idx3-ubyte" if arr.ndim == 3 else "idx1-ubyte"
        name = f"{prefix}{'.' if dot else '-'}{suffix}"
        data = idx_bytes(arr)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


def cifar_batch(n: int, label_key: str, num_classes: int, rng) -> dict[bytes, object]:
    return {
        b"batch_label": b"synthetic",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key.encode(): [int(v) for v in rng.integers(0, num_classes, n)],
        b"filenames": [f"img{i}.png".encode() for i in range(n)],
    }


def write_cifar10(folder: Path, per_batch: int = 3, seed: int = 0) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {f"data_batch_{i}": cifar_batch(per_batch, "labels", 10, rng) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(4, "labels", 10, rng)
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return batches


def tar_folder(folder: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)


# ---------------------------------------------------------------- IDX / MNIST


def test_read_idx_parses_gz_and_raw_and_checks_magic(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(arr))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz", expect_magic=0x0803), arr)
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "a", expect_magic=0x0801)
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01" + b"\0" * 8)
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(idx_bytes(arr)[:-3])
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "short")


def test_mnist_from_gz_folder_shapes_and_normalisation(tmp_path):
    arrays = write_idx_set(tmp_path / "mnist")
    ds = load_dataset("mnist", str(tmp_path / "mnist"))
    assert ds.name == "mnist" and ds.num_classes == 10
    assert ds.train_x.shape == (12, 1, 28, 28) and ds.test_x.shape == (5, 1, 28, 28)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert ds.input_shape == (1, 28, 28)
    expected = (torch.from_numpy(arrays["train-images"]).float() / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(ds.train_x[:, 0], expected)
    assert ds.train_y.tolist() == arrays["train-labels"].tolist()
    assert int(ds.test_y.min()) >= 0 and int(ds.test_y.max()) < 10


def test_mnist_parent_folder_raw_dot_spelling_and_torchvision_layout(tmp_path):
    write_idx_set(tmp_path / "data" / "MNIST" / "raw", gz=False, dot=True)
    for root in (tmp_path / "data", tmp_path / "data" / "MNIST", tmp_path / "data/MNIST/raw"):
        ds = load_dataset("MNIST", str(root))
        assert ds.train_x.shape == (12, 1, 28, 28)


def test_fashion_mnist_aliases_folder_names_and_constants(tmp_path):
    arrays = write_idx_set(tmp_path / "fashion-mnist", seed=3)
    write_idx_set(tmp_path / "mnist", seed=4)  # a sibling data set must not be picked instead
    for name in ("fashion_mnist", "fashion-mnist", "fmnist", "FashionMNIST"):
        assert DATASETS.canonical(name) == "fashion_mnist"
    ds = load_dataset("FashionMNIST", str(tmp_path))
    expected = (torch.from_numpy(arrays["t10k-images"]).float() / 255 - 0.2860) / 0.3530
    torch.testing.assert_close(ds.test_x[:, 0], expected)


def test_root_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_idx_set(tmp_path / "datasets" / "mnist")
    assert load_dataset("mnist", "~/datasets").train_x.shape[0] == 12


def test_missing_folder_error_names_dataset_folder_files_and_setting(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("mnist", str(missing))
    msg = str(info.value)
    assert "mnist" in msg and str(missing) in msg and "train-images-idx3-ubyte" in msg
    assert "data_args.data_cache_dir" in msg
    assert isinstance(info.value, FileNotFoundError)


def test_empty_folder_error_lists_folders_looked_in(tmp_path):
    (tmp_path / "mnist").mkdir()
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("mnist", str(tmp_path))
    msg = str(info.value)
    assert str(tmp_path) in msg and str(tmp_path / "mnist") in msg
    assert "t10k-labels-idx1-ubyte" in msg and "data_args.data_cache_dir" in msg


def test_folder_named_for_another_dataset_is_not_read(tmp_path):
    write_idx_set(tmp_path / "mnist")  # MNIST and Fashion-MNIST files have the same names
    with pytest.raises(DataNotFoundError, match="named for another data set"):
        load_dataset("fashion_mnist", str(tmp_path / "mnist"))
    with pytest.raises(DataNotFoundError, match="fashion-mnist/"):
        load_dataset("fashion_mnist", str(tmp_path))
    assert load_dataset("mnist", str(tmp_path / "mnist")).train_x.shape[0] == 12


def test_default_root_is_reported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataNotFoundError, match="default: no data_cache_dir"):
        load_dataset("mnist", None)


def test_one_missing_file_is_named(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", str(tmp_path))


def test_mismatched_counts_and_bad_labels_are_errors(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(ValueError, match="5 images but 3 labels"):
        load_dataset("mnist", str(tmp_path))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(idx_bytes(np.full(5, 12, np.uint8)))
    with pytest.raises(ValueError, match="labels outside"):
        load_dataset("mnist", str(tmp_path))


def test_candidate_folders_match_names_loosely(tmp_path):
    (tmp_path / "Fashion_MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    found = candidate_folders(tmp_path, ["fashion-mnist"])
    assert found == [tmp_path, tmp_path / "Fashion_MNIST", tmp_path / "Fashion_MNIST" / "raw"]
    assert fold_name("Fashion-MNIST") == fold_name("fashion_mnist") == "fashionmnist"


# ---------------------------------------------------------------- CIFAR


def _expected_cifar(batches: list[dict], mean, std) -> torch.Tensor:
    data = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
    x = torch.from_numpy(data).float() / 255
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_cifar10_from_batches_layout_and_per_channel_normalisation(tmp_path):
    batches = write_cifar10(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", str(tmp_path))  # parent folder
    assert ds.train_x.shape == (15, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert ds.num_classes == 10 and ds.input_shape == (3, 32, 32)
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    torch.testing.assert_close(ds.train_x, _expected_cifar(train, CIFAR10_MEAN, CIFAR10_STD))
    assert ds.train_y.tolist() == [v for b in train for v in b[b"labels"]]
    # pixel (c, h, w) of image i is data[i, c*1024 + h*32 + w]
    raw = batches["test_batch"][b"data"][2, 1 * 1024 + 5 * 32 + 7]
    assert ds.test_x[2, 1, 5, 7].item() == pytest.approx((raw / 255 - 0.4822) / 0.2435, abs=1e-5)


def test_cifar10_from_archive_only_matches_batches(tmp_path):
    src = tmp_path / "src" / "cifar-10-batches-py"
    write_cifar10(src)
    ref = load_dataset("cifar-10", str(src))
    root = tmp_path / "root"
    root.mkdir()
    tar_folder(src, root / "cifar-10-python.tar.gz")
    ds = load_dataset("CIFAR10", str(root))
    torch.testing.assert_close(ds.train_x, ref.train_x)
    assert torch.equal(ds.test_y, ref.test_y)
    assert not (root / "cifar-10-batches-py").exists()  # nothing extracted to disk


def test_cifar10_missing_batch_is_named(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "data_batch_4").unlink()
    with pytest.raises(DataNotFoundError, match="data_batch_4"):
        load_dataset("cifar10", str(tmp_path))


def test_cifar10_not_found_message(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("cifar10", str(tmp_path))
    msg = str(info.value)
    assert "cifar10" in msg and "data_batch_1" in msg and "cifar-10-python.tar.gz" in msg
    assert "data_args.data_cache_dir" in msg


def test_cifar100_fine_labels_from_folder_and_archive(tmp_path):
    rng = np.random.default_rng(5)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train, test = cifar_batch(6, "fine_labels", 100, rng), cifar_batch(3, "fine_labels", 100, rng)
    train[b"fine_labels"][0] = 99
    (folder / "train").write_bytes(pickle.dumps(train, protocol=2))
    (folder / "test").write_bytes(pickle.dumps(test, protocol=2))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": []}, protocol=2))
    ds = load_dataset("cifar100", str(tmp_path))
    assert ds.num_classes == 100 and ds.train_x.shape == (6, 3, 32, 32)
    assert ds.train_y.tolist() == train[b"fine_labels"] and int(ds.train_y.max()) == 99
    other = tmp_path / "other"
    other.mkdir()
    tar_folder(folder, other / "cifar-100-python.tar.gz")
    torch.testing.assert_close(load_dataset("cifar-100", str(other)).test_x, ds.test_x)


def test_cifar_unpickler_refuses_code_and_accepts_str_keys():
    evil = pickle.dumps({"data": os.getcwd})
    with pytest.raises(ValueError, match="refusing"):
        read_cifar_batch(evil)
    batch = read_cifar_batch(pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [1]}))
    assert set(batch) == {"data", "labels"}


# ---------------------------------------------------------------- SVHN


def test_svhn_mat_layout_label_ten_and_normalisation(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(7)
    folder = tmp_path / "SVHN"
    folder.mkdir()
    mats = {}
    for name, n in (("train_32x32.mat", 5), ("test_32x32.mat", 3)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = np.array([10, 1, 2, 9, 10][:n], dtype=np.uint8).reshape(n, 1)
        savemat(folder / name, {"X": x, "y": y})
        mats[name] = (x, y)
    ds = load_dataset("svhn", str(tmp_path))
    assert ds.train_x.shape == (5, 3, 32, 32) and ds.test_x.shape == (3, 3, 32, 32)
    assert ds.train_y.tolist() == [0, 1, 2, 9, 0] and ds.test_y.tolist() == [0, 1, 2]
    x = mats["train_32x32.mat"][0]
    raw = x[4, 6, 2, 3]  # X[h, w, c, n] → image n, channel c, row h, column w
    expected = (raw / 255 - SVHN_MEAN[2]) / SVHN_STD[2]
    assert ds.train_x[3, 2, 4, 6].item() == pytest.approx(expected, abs=1e-5)


def test_svhn_not_found_message(tmp_path):
    with pytest.raises(DataNotFoundError, match="train_32x32.mat"):
        load_dataset("svhn", str(tmp_path))


def test_normalize_uint8_checks_inputs():
    with pytest.raises(ValueError, match="uint8"):
        normalize_uint8(np.zeros(3, np.float32), 0.5, 0.5)
    with pytest.raises(ValueError, match="per-channel"):
        normalize_uint8(np.zeros((2, 2, 4, 4), np.uint8), (0, 0, 0), (1, 1, 1))


# ---------------------------------------------------------------- the real files, when present

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def shared_datasets() -> Path:
    env = os.environ.get("SHIELDWALL_SHARED_DATASETS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.mark.parametrize(
    "name, folder, train_counts, test_counts",
    [
        ("mnist", "mnist", MNIST_TRAIN_COUNTS, MNIST_TEST_COUNTS),
        ("fashion_mnist", "fashion-mnist", [6000] * 10, [1000] * 10),
    ],
)
def test_real_idx_datasets(name, folder, train_counts, test_counts):
    root = shared_datasets()
    if not (root / folder / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real {name} not found under {root} (set SHIELDWALL_SHARED_DATASETS)")
    start = time.perf_counter()
    ds = load_dataset(name, str(root))
    elapsed = time.perf_counter() - start
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.train_y, minlength=10).tolist() == train_counts
    assert torch.bincount(ds.test_y, minlength=10).tolist() == test_counts
    assert abs(ds.train_x.mean().item()) < 0.01 and abs(ds.train_x.std().item() - 1) < 0.01
    assert elapsed < 15, f"loading {name} took {elapsed:.1f} s"  # ~0.5 s on an idle core
