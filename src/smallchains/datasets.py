"""Loaders for the MNIST and Fashion-MNIST image classification data sets.

Nothing is ever downloaded and nothing is cached on disk: the loaders read the
four standard IDX files of a data set from a local directory::

    train-images-idx3-ubyte   train-labels-idx1-ubyte
    t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte

each either plain or gzipped (with a ``.gz`` suffix; the plain file is preferred
when both are present).

Search order (the first directory that holds all four files wins; files are never
mixed across directories):

1. the ``path`` argument, when given; it replaces the search below entirely;
2. ``$SMALLCHAINS_DATA/<name>`` (``<name>`` is ``fashion-mnist`` or ``mnist``),
   when the environment variable ``SMALLCHAINS_DATA`` is set;
3. ``$SMALLCHAINS_DATA`` itself;
4. ``/usr/share/datasets/<name>``, where Debian/Ubuntu's package
   ``dataset-fashion-mnist`` installs Fashion-MNIST
   (``sudo apt-get install dataset-fashion-mnist``).

When no directory has the files a :class:`FileNotFoundError` lists the directories
searched and how to install the data.

Example::

    import smallchains as sc
    X_train, y_train, X_test, y_test = sc.datasets.fashion_mnist()
    X_train.shape, X_train.dtype, y_train.shape   # ((60000, 1, 28, 28), float32, (60000,))

:func:`read_idx` reads a single IDX file of any IDX element type into a NumPy array.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

__all__ = ["fashion_mnist", "mnist", "read_idx"]

ENV_VAR = "SMALLCHAINS_DATA"
SYSTEM_DIR = Path("/usr/share/datasets")

_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# IDX element type codes -> big-endian NumPy dtypes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_NUM_CLASSES = 10


# --------------------------------------------------------------------------------------------------------------------
# IDX parsing


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when the file is gzip-compressed (detected by its magic bytes, not its name)."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        if path.suffix == ".gz":
            raise ValueError(
                f"IDX file {str(path)!r} has a .gz suffix but is not gzip-compressed "
                f"(its first bytes are {raw[:4]!r}); re-download or decompress it again"
            )
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(
            f"IDX file {str(path)!r} is a corrupt or truncated gzip file ({exc}); re-download or reinstall it"
        ) from exc


def _parse_idx(data: bytes, name: str) -> np.ndarray:
    """Parse IDX ``data`` into a (possibly read-only, big-endian) array view; ``name`` is used in errors."""
    if len(data) < 4:
        raise ValueError(f"IDX file {name!r} is truncated: {len(data)} bytes, fewer than the 4-byte magic number")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"IDX file {name!r} has a bad magic number 0x{data[:4].hex()}: the first two bytes must be "
            "zero; it is not an IDX file (or it is gzipped under a name without .gz)"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise ValueError(
            f"IDX file {name!r} has a bad magic number 0x{data[:4].hex()}: unknown element type code "
            f"0x{code:02X} (the IDX format defines {known})"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"IDX file {name!r} is truncated: the header announces {ndim} dimensions "
            f"({header} header bytes) but the file has only {len(data)} bytes"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    count = int(np.prod(dims, dtype=np.int64))
    expected = count * dtype.itemsize
    have = len(data) - header
    if have < expected:
        raise ValueError(
            f"IDX file {name!r} is truncated: its dimensions {dims} of {dtype.name} need "
            f"{expected} data bytes but only {have} follow the header; re-download or reinstall it"
        )
    if have > expected:
        raise ValueError(
            f"IDX file {name!r} has {have - expected} unexpected trailing bytes after the "
            f"{expected} data bytes that its dimensions {dims} of {dtype.name} need; it is corrupt"
        )
    return np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (plain or gzip-compressed) into a NumPy array.

    The IDX format: two zero bytes, an element type code (0x08 uint8, 0x09 int8,
    0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions,
    one big-endian uint32 per dimension, then the data in C order, big-endian.

    Args:
        path: the file.  Gzip compression is detected from the content.

    Returns:
        A writable C-contiguous array in native byte order with the file's
        dimensions and element type (``np.uint8`` for the MNIST files).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: bad magic number, unknown element type, truncated or over-long data,
            or corrupt gzip stream; the message names the file.

    Example::

        >>> labels = read_idx("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz")  # doctest: +SKIP
        >>> labels.shape, labels.dtype, labels[0]  # doctest: +SKIP
        ((60000,), dtype('uint8'), np.uint8(9))
    """
    p = Path(path)
    arr = _parse_idx(_read_bytes(p), str(p))
    return arr.astype(arr.dtype.newbyteorder("="))  # copy: writable, native byte order


# --------------------------------------------------------------------------------------------------------------------
# Data set loaders


def _check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype) if dtype is not None else None
    except TypeError:
        dt = None
    if dt is None or dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"`dtype` must be np.float32 or np.float64, got {dtype!r}")
    return dt


def _search_dirs(name: str, path: str | os.PathLike | None) -> list[Path]:
    if path is not None:
        return [Path(path).expanduser()]
    dirs = []
    env = os.environ.get(ENV_VAR)
    if env:
        root = Path(env).expanduser()
        dirs += [root / name, root]
    dirs.append(SYSTEM_DIR / name)
    return dirs


def _find_files(directory: Path) -> tuple[list[Path], list[str]]:
    """The four files found in ``directory`` (plain preferred over .gz), and the names of the missing ones."""
    found, missing = [], []
    for fname in _FILES:
        for candidate in (directory / fname, directory / (fname + ".gz")):
            if candidate.is_file():
                found.append(candidate)
                break
        else:
            missing.append(fname)
    return found, missing


def _load(name: str, path: str | os.PathLike | None, dtype, install_hint: str):
    dt = _check_dtype(dtype)
    searched = []
    for directory in _search_dirs(name, path):
        if not directory.is_dir():
            searched.append(f"  {directory}  (no such directory)")
            continue
        files, missing = _find_files(directory)
        if not missing:
            break
        searched.append(f"  {directory}  (missing: {', '.join(missing)}, plain or .gz)")
    else:
        if path is not None:
            searched.append("  (only the `path` argument is searched when it is given)")
        elif not os.environ.get(ENV_VAR):
            searched.append(f"  (${ENV_VAR} is not set)")
        raise FileNotFoundError(
            f"{name} data files not found; searched:\n" + "\n".join(searched) + "\n"
            f"To install them: {install_hint}put the four IDX files ({', '.join(_FILES)}; plain or gzipped "
            f"with .gz) in ${ENV_VAR}/{name} (e.g. export {ENV_VAR}=$HOME/data) or pass `path=`. "
            "smallchains never downloads data."
        )

    out = []
    for img_path, lbl_path in ((files[0], files[1]), (files[2], files[3])):
        images = _parse_idx(_read_bytes(img_path), str(img_path))
        labels = _parse_idx(_read_bytes(lbl_path), str(lbl_path))
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"IDX file {str(img_path)!r} should hold uint8 images of shape (n, rows, cols), "
                f"got {images.dtype.name} of shape {images.shape}"
            )
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ValueError(
                f"IDX file {str(lbl_path)!r} should hold integer labels of shape (n,), "
                f"got {labels.dtype.name} of shape {labels.shape}"
            )
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"image/label count mismatch: {str(img_path)!r} holds {images.shape[0]} images but "
                f"{str(lbl_path)!r} holds {labels.shape[0]} labels"
            )
        bad = np.flatnonzero((labels < 0) | (labels >= _NUM_CLASSES))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"IDX file {str(lbl_path)!r} has {bad.size} label(s) outside 0..{_NUM_CLASSES - 1}, "
                f"the first is {int(labels[i])} at index {i}; the file is corrupt or not a label file"
            )
        n, rows, cols = images.shape
        X = np.divide(images, 255, dtype=dt).reshape(n, 1, rows, cols)
        y = labels.astype(np.int64)
        out += [X, y]
    return tuple(out)


def fashion_mnist(path: str | os.PathLike | None = None, dtype=np.float32):
    """Load Fashion-MNIST (Zalando's 28x28 grey-scale clothing images, 10 classes) from local IDX files.

    Args:
        path: a directory holding the four IDX files; overrides the search of
            ``$SMALLCHAINS_DATA/fashion-mnist``, ``$SMALLCHAINS_DATA`` and
            ``/usr/share/datasets/fashion-mnist`` (see the module docstring).
        dtype: ``np.float32`` (default) or ``np.float64``, the images' dtype.

    Returns:
        ``(X_train, y_train, X_test, y_test)``: images of shape ``(60000, 1, 28, 28)`` and
        ``(10000, 1, 28, 28)`` (NCHW) scaled to [0, 1], and ``np.int64`` labels in 0..9
        (0 T-shirt/top, 1 trouser, 2 pullover, 3 dress, 4 coat, 5 sandal, 6 shirt,
        7 sneaker, 8 bag, 9 ankle boot) of shape ``(60000,)`` and ``(10000,)``.

    Raises:
        FileNotFoundError: the files are in none of the directories searched (install
            them with ``sudo apt-get install dataset-fashion-mnist`` on Debian/Ubuntu).
        ValueError: a file is corrupt (bad magic, truncated, count mismatch, labels out of range).
        TypeError: ``dtype`` is neither float32 nor float64.

    Example::

        >>> import smallchains as sc
        >>> X_train, y_train, X_test, y_test = sc.datasets.fashion_mnist()  # doctest: +SKIP
        >>> X_train.shape, X_train.dtype, y_train[0]  # doctest: +SKIP
        ((60000, 1, 28, 28), dtype('float32'), np.int64(9))
        >>> X = X_train.reshape(len(X_train), -1).T  # features x samples, for a SimpleChain  # doctest: +SKIP
    """
    return _load(
        "fashion-mnist",
        path,
        dtype,
        "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; installs them in "
        "/usr/share/datasets/fashion-mnist), or ",
    )


def mnist(path: str | os.PathLike | None = None, dtype=np.float32):
    """Load MNIST (28x28 grey-scale handwritten digits, 10 classes) from local IDX files.

    Args:
        path: a directory holding the four IDX files; overrides the search of
            ``$SMALLCHAINS_DATA/mnist``, ``$SMALLCHAINS_DATA`` and
            ``/usr/share/datasets/mnist`` (see the module docstring).
        dtype: ``np.float32`` (default) or ``np.float64``, the images' dtype.

    Returns:
        ``(X_train, y_train, X_test, y_test)``: images of shape ``(60000, 1, 28, 28)`` and
        ``(10000, 1, 28, 28)`` (NCHW) scaled to [0, 1], and ``np.int64`` digit labels in 0..9
        of shape ``(60000,)`` and ``(10000,)``.

    Raises:
        FileNotFoundError: the files are in none of the directories searched (Debian/Ubuntu has
            no MNIST package: obtain the four files yourself and put them in ``$SMALLCHAINS_DATA/mnist``).
        ValueError: a file is corrupt (bad magic, truncated, count mismatch, labels out of range).
        TypeError: ``dtype`` is neither float32 nor float64.

    Example::

        >>> import smallchains as sc
        >>> X_train, y_train, X_test, y_test = sc.datasets.mnist("~/data/mnist")  # doctest: +SKIP
        >>> X_test.shape, y_test[:3]  # doctest: +SKIP
        ((10000, 1, 28, 28), array([7, 2, 1]))
    """
    return _load(
        "mnist", path, dtype, "obtain the four MNIST files yourself (Debian/Ubuntu has no package for them) and "
    )
