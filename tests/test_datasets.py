"""Tests of smallchains.datasets: IDX parsing on small synthetic files, and the real Fashion-MNIST when installed."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

import smallchains as sc
from smallchains.datasets import read_idx

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(arr: np.ndarray) -> bytes:
    """Serialize ``arr`` in the IDX format (independently of the code under test)."""
    arr = np.ascontiguousarray(arr)
    header = bytes([0, 0, IDX_CODES[arr.dtype.type], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> Path:
    data = idx_bytes(arr)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def make_dataset(
    directory: Path, gz: bool = False, n_train: int = 7, n_test: int = 3, rows: int = 28, cols: int = 28, seed: int = 0
):
    """Write a tiny synthetic data set (the four IDX files) into ``directory``; return the raw arrays."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = []
    for n in (n_train, n_test):
        images = rng.integers(0, 256, size=(n, rows, cols), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255  # make sure both ends of the range occur
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        arrays += [images, labels]
    for name, arr in zip(FILES, arrays):
        write_idx(directory / name, arr, gz)
    return arrays


# ---------------------------------------------------------------------------------------------------------------------
# read_idx


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", list(IDX_CODES))
def test_read_idx_round_trip(tmp_path, dtype, gz):
    rng = np.random.default_rng(1)
    arr = (rng.standard_normal((4, 3, 5)) * 100).astype(dtype)
    path = write_idx(tmp_path / "a-idx3", arr, gz)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable and out.flags.c_contiguous


def test_read_idx_accepts_str_and_1d(tmp_path):
    arr = np.arange(10, dtype=np.uint8)
    path = write_idx(tmp_path / "labels", arr, gz=False)
    np.testing.assert_array_equal(read_idx(str(path)), arr)


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x01\x00\x08\x01" + struct.pack(">I", 2) + b"\x00\x01")
    with pytest.raises(ValueError, match=r"bad magic.*first two bytes"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"\x00\x01")  # unknown type code
    with pytest.raises(ValueError, match=r"bad magic.*0x07"):
        read_idx(path)


def test_read_idx_truncated(tmp_path):
    data = idx_bytes(np.zeros((5, 4, 4), np.uint8))
    path = tmp_path / "trunc-idx3-ubyte"
    path.write_bytes(data[:-3])
    with pytest.raises(ValueError, match=r"trunc-idx3-ubyte.*truncated.*80 data bytes but only 77"):
        read_idx(path)
    path.write_bytes(data[:10])  # inside the header
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)
    gz = tmp_path / "trunc.gz"
    gz.write_bytes(gzip.compress(data)[:-10])  # truncated gzip stream
    with pytest.raises(ValueError, match=r"trunc\.gz.*gzip"):
        read_idx(gz)


def test_read_idx_trailing_bytes(tmp_path):
    path = tmp_path / "long"
    path.write_bytes(idx_bytes(np.zeros(3, np.uint8)) + b"\x00")
    with pytest.raises(ValueError, match="trailing"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


# ---------------------------------------------------------------------------------------------------------------------
# fashion_mnist / mnist on synthetic files


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("loader", [sc.datasets.fashion_mnist, sc.datasets.mnist])
def test_loader_round_trip(tmp_path, loader, gz):
    Xtr_raw, ytr_raw, Xte_raw, yte_raw = make_dataset(tmp_path, gz=gz)
    X_train, y_train, X_test, y_test = loader(path=tmp_path)
    assert X_train.shape == (7, 1, 28, 28) and X_test.shape == (3, 1, 28, 28)  # NCHW
    assert y_train.shape == (7,) and y_test.shape == (3,)
    assert X_train.dtype == np.float32 and X_test.dtype == np.float32
    assert np.issubdtype(y_train.dtype, np.integer) and np.issubdtype(y_test.dtype, np.integer)
    assert X_train.min() == 0.0 and X_train.max() == 1.0
    np.testing.assert_allclose(X_train[:, 0], Xtr_raw / 255.0, rtol=1e-6)
    np.testing.assert_allclose(X_test[:, 0], Xte_raw / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y_train, ytr_raw)
    np.testing.assert_array_equal(y_test, yte_raw)


def test_loader_dtype(tmp_path):
    make_dataset(tmp_path)
    X, _, Xt, _ = sc.datasets.fashion_mnist(tmp_path, dtype=np.float64)
    assert X.dtype == np.float64 and Xt.dtype == np.float64
    assert sc.datasets.mnist(tmp_path, dtype="float32")[0].dtype == np.float32
    for bad in (np.int32, np.float16, "nonsense", None, ">f4"):
        with pytest.raises(TypeError, match="dtype"):
            sc.datasets.fashion_mnist(tmp_path, dtype=bad)


def test_loader_non_square_images(tmp_path):
    make_dataset(tmp_path, rows=5, cols=3)
    X, _, Xt, _ = sc.datasets.mnist(tmp_path)
    assert X.shape == (7, 1, 5, 3) and Xt.shape == (3, 1, 5, 3)


def test_loader_prefers_plain_and_mixes_gz(tmp_path):
    make_dataset(tmp_path, gz=False, seed=0)
    raw = make_dataset(tmp_path / "other", gz=True, seed=1)
    # A .gz beside the plain file is ignored; a directory may mix plain and gzipped files.
    (tmp_path / "other" / "t10k-labels-idx1-ubyte.gz").rename(tmp_path / "t10k-labels-idx1-ubyte.gz")
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    _, y_train, _, y_test = sc.datasets.fashion_mnist(tmp_path)
    np.testing.assert_array_equal(y_test, raw[3])
    assert y_train.shape == (7,)


def test_loader_count_mismatch(tmp_path):
    make_dataset(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(6, np.uint8), gz=False)
    with pytest.raises(ValueError, match=r"mismatch.*train-images-idx3-ubyte.*7 images.*train-labels.*6 labels"):
        sc.datasets.fashion_mnist(tmp_path)


def test_loader_labels_out_of_range(tmp_path):
    make_dataset(tmp_path)
    labels = np.array([0, 1, 2], np.uint8)
    labels[1] = 10
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz.*outside 0\.\.9.*10 at index 1"):
        sc.datasets.mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([0, -1, 2], np.int8), gz=False)  # plain wins over .gz
    with pytest.raises(ValueError, match=r"outside 0\.\.9.*-1 at index 1"):
        sc.datasets.mnist(tmp_path)


def test_loader_truncated_and_bad_magic(tmp_path):
    make_dataset(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte"
    data = images.read_bytes()
    images.write_bytes(data[:-1])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*truncated"):
        sc.datasets.fashion_mnist(tmp_path)
    images.write_bytes(b"\xff" + data[1:])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*bad magic"):
        sc.datasets.fashion_mnist(tmp_path)


def test_loader_wrong_file_kinds(tmp_path):
    make_dataset(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((7, 4), np.uint8), gz=False)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*\(n, rows, cols\)"):
        sc.datasets.fashion_mnist(tmp_path)
    make_dataset(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(7, np.float32), gz=False)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*integer labels"):
        sc.datasets.fashion_mnist(tmp_path)


def test_missing_files(tmp_path, monkeypatch):
    monkeypatch.delenv("SMALLCHAINS_DATA", raising=False)
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        sc.datasets.fashion_mnist(path=missing)
    msg = str(info.value)
    assert str(missing) in msg and "sudo apt-get install dataset-fashion-mnist" in msg
    assert "$SMALLCHAINS_DATA/fashion-mnist" in msg

    # An incomplete directory names the missing files; files are not taken from two directories.
    make_dataset(tmp_path / "partial")
    (tmp_path / "partial" / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"partial.*missing: t10k-images-idx3-ubyte"):
        sc.datasets.fashion_mnist(path=tmp_path / "partial")

    # The default search lists every directory it tried.
    monkeypatch.setenv("SMALLCHAINS_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(sc.datasets, "SYSTEM_DIR", tmp_path / "system")
    with pytest.raises(FileNotFoundError) as info:
        sc.datasets.mnist()
    msg = str(info.value)
    for d in (tmp_path / "data" / "mnist", tmp_path / "data", tmp_path / "system" / "mnist"):
        assert str(d) in msg
    assert "$SMALLCHAINS_DATA/mnist" in msg


@pytest.mark.parametrize("subdir", [True, False])
def test_smallchains_data_env(tmp_path, monkeypatch, subdir):
    monkeypatch.setattr(sc.datasets, "SYSTEM_DIR", tmp_path / "system")  # the installed data must not be found
    raw = make_dataset(tmp_path / "fashion-mnist" if subdir else tmp_path, gz=True, seed=3)
    monkeypatch.setenv("SMALLCHAINS_DATA", str(tmp_path))
    _, y_train, _, y_test = sc.datasets.fashion_mnist()
    np.testing.assert_array_equal(y_train, raw[1])
    np.testing.assert_array_equal(y_test, raw[3])


def test_smallchains_data_subdir_first_and_path_overrides(tmp_path, monkeypatch):
    monkeypatch.setattr(sc.datasets, "SYSTEM_DIR", tmp_path / "system")
    top = make_dataset(tmp_path, seed=4)
    sub = make_dataset(tmp_path / "mnist", seed=5)
    other = make_dataset(tmp_path / "elsewhere", seed=6)
    make_dataset(tmp_path / "system" / "mnist", seed=7)
    monkeypatch.setenv("SMALLCHAINS_DATA", str(tmp_path))
    np.testing.assert_array_equal(sc.datasets.mnist()[1], sub[1])
    np.testing.assert_array_equal(sc.datasets.mnist(path=tmp_path / "elsewhere")[1], other[1])
    np.testing.assert_array_equal(sc.datasets.mnist(path=str(tmp_path))[1], top[1])


def test_system_dir_is_last(tmp_path, monkeypatch):
    monkeypatch.delenv("SMALLCHAINS_DATA", raising=False)
    monkeypatch.setattr(sc.datasets, "SYSTEM_DIR", tmp_path)
    raw = make_dataset(tmp_path / "fashion-mnist", gz=True, seed=8)
    np.testing.assert_array_equal(sc.datasets.fashion_mnist()[1], raw[1])


def test_registered_in_package():
    assert "datasets" in sc.__all__
    assert {"fashion_mnist", "mnist", "read_idx"} <= set(dir(sc.datasets))


# ---------------------------------------------------------------------------------------------------------------------
# The real Fashion-MNIST (Debian's dataset-fashion-mnist)


def test_real_fashion_mnist(monkeypatch):
    if not FASHION_DIR.is_dir():
        pytest.skip(f"{FASHION_DIR} is absent (sudo apt-get install dataset-fashion-mnist)")
    monkeypatch.delenv("SMALLCHAINS_DATA", raising=False)
    X_train, y_train, X_test, y_test = sc.datasets.fashion_mnist()
    assert X_train.shape == (60000, 1, 28, 28) and X_test.shape == (10000, 1, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert X_train.dtype == np.float32 and X_test.dtype == np.float32
    for X in (X_train, X_test):
        assert X.min() == 0.0 and X.max() == 1.0
    for y in (y_train, y_test):
        assert y.min() == 0 and y.max() == 9
        assert set(np.unique(y).tolist()) == set(range(10))
    assert y_train[0] == 9  # the first training image is an ankle boot
    # The loader agrees with read_idx on the raw bytes.
    raw = read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz")
    assert raw.dtype == np.uint8 and raw.shape == (60000, 28, 28)
    np.testing.assert_array_equal(X_train[0, 0], raw[0] / np.float32(255))
