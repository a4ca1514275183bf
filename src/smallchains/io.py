"""Saving and loading a chain with its parameters: ``sc.save``, ``sc.load``, ``sc.load_params``.

Usage::

    sc.save("model.npz", chain, p, epochs=2000, note="tanh surrogate")
    chain, p = sc.load("model.npz")
    chain, p, meta = sc.load("model.npz", with_metadata=True)   # meta == {"epochs": 2000, "note": ...}
    p = sc.load_params("model.npz", chain)                      # p only, checked against `chain`

File format (version 1)
-----------------------
An ``.npz`` file (a zip archive written by ``np.savez``, uncompressed, readable with
``np.load(path, allow_pickle=False)``; no pickle is written or read) holding two arrays:

* ``params``: the flat parameter vector, 1-D, little-endian float32 or float64 (the dtype
  given to ``save`` is kept);
* ``meta``: a 1-D ``uint8`` array holding UTF-8 JSON (a 0-d string array is also accepted
  on load)::

    {"format": "smallchains-chain",   # identifies the file
     "version": 1,                    # format version; a newer one is refused with a clear error
     "smallchains_version": "0.1.0",  # the version that wrote the file (informative)
     "input": [3],                    # chain.input_shape, or [chain.input_dim]
     "layers": [{"kind": "Dense", "out": 5, "activation": "tanh", "bias": true}, ...],
     "num_params": 32,
     "dtype": "float32",
     "sha256": "...",                 # hex digest of the little-endian bytes of `params`
     "metadata": {...}}               # the keyword arguments given to save()

Each layer is rebuilt as ``getattr(smallchains.layers, d["kind"])(**rest)``, where ``rest``
is the description without ``"kind"`` and with JSON lists turned back into tuples; only
subclasses of ``smallchains.layers.Layer`` exported by ``smallchains.layers`` are accepted.

Paths follow ``np.savez``: a path that does not end in ``.npz`` gets ``.npz`` appended
(``save("model", ...)`` writes ``model.npz`` and returns that path); ``load("model")`` reads
``model`` if it is a file, otherwise ``model.npz``.

Writing is atomic: the file is written to a temporary file in the target's directory,
flushed to disk, then renamed onto the target, so an interrupted save leaves either the
old file or the new one, never a partial file (and no temporary file on a Python error).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

import numpy as np

from . import layers as _layers
from ._atomic import atomic_write
from .chain import SimpleChain

FORMAT = "smallchains-chain"
VERSION = 1
_DTYPES = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}

__all__ = ["load", "load_params", "save"]


# --------------------------------------------------------------------------- helpers


def _json_default(obj):
    """JSON encoder hook: NumPy scalars and arrays become Python numbers and lists."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def _dumps(obj) -> str:
    return json.dumps(obj, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def _normalise(obj):
    """``obj`` as it comes back from JSON (tuples become lists, NumPy scalars Python numbers)."""
    return json.loads(_dumps(obj))


def _tuples(v):
    """JSON lists back to tuples (recursively), as the layer constructors were given them."""
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    if isinstance(v, dict):
        return {k: _tuples(x) for k, x in v.items()}
    return v


def _digest(params: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(params).tobytes()).hexdigest()


def _chain_input(chain) -> list:
    shape = getattr(chain, "input_shape", (chain.input_dim,))
    return [int(n) for n in shape]


def _save_path(path) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or os.PathLike (e.g. 'model.npz'), got {type(path).__name__}")
    path = os.fsdecode(os.fspath(path))
    if not path.endswith(".npz"):
        path += ".npz"  # what np.savez does with a name
    return path


def _load_path(path) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or os.PathLike (e.g. 'model.npz'), got {type(path).__name__}")
    path = os.fsdecode(os.fspath(path))
    if os.path.isfile(path):
        return path
    if not path.endswith(".npz") and os.path.isfile(path + ".npz"):
        return path + ".npz"
    if path.endswith(".npz"):
        what = "it is a directory, not a file" if os.path.isdir(path) else "no such file"
    else:
        what = f"neither {path!r} nor {path + '.npz'!r} is a file"
    raise FileNotFoundError(f"cannot load `path`={path!r}: {what}; pass the path given to (or returned by) sc.save()")


def _layer_class(kind, where: str):
    cls = getattr(_layers, kind, None) if isinstance(kind, str) and not kind.startswith("_") else None
    if not (isinstance(cls, type) and issubclass(cls, _layers.Layer) and cls is not _layers.Layer):
        known = sorted(
            n
            for n in dir(_layers)
            if not n.startswith("_")
            and isinstance(getattr(_layers, n), type)
            and issubclass(getattr(_layers, n), _layers.Layer)
            and getattr(_layers, n) is not _layers.Layer
        )
        raise ValueError(
            f"{where}: unknown layer kind {kind!r}; this smallchains knows {', '.join(known)} "
            "(a file from a newer smallchains needs that version; a layer must be a class exported by "
            "smallchains.layers to be saved)"
        )
    return cls


def _rebuild(input_shape, layer_descriptions, where: str) -> SimpleChain:
    """The chain described by ``input_shape`` and the (JSON) layer descriptions."""
    if (
        not isinstance(input_shape, list)
        or not input_shape
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in input_shape)
    ):
        raise ValueError(f"{where}: invalid input shape {input_shape!r} (a non-empty list of integers)")
    if not isinstance(layer_descriptions, list) or not layer_descriptions:
        raise ValueError(f"{where}: invalid layer list {layer_descriptions!r}")
    built = []
    for i, d in enumerate(layer_descriptions):
        if not isinstance(d, dict) or "kind" not in d:
            raise ValueError(f"{where}: layer {i} has no 'kind': {d!r}")
        cls = _layer_class(d["kind"], f"{where}, layer {i}")
        kwargs = {k: _tuples(v) for k, v in d.items() if k != "kind"}
        try:
            built.append(cls(**kwargs))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: layer {i} {d!r} cannot be rebuilt: {exc}") from exc
    shape = input_shape[0] if len(input_shape) == 1 else tuple(input_shape)
    try:
        return SimpleChain(shape, *built)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: the chain cannot be rebuilt: {exc}") from exc


def _first_difference(file_desc: dict, chain_desc: dict) -> str | None:
    """The first difference between two normalised descriptions ({"input", "layers"}), or None."""
    if file_desc["input"] != chain_desc["input"]:
        return f"input shape: file has {file_desc['input']}, chain has {chain_desc['input']}"
    fl, cl = file_desc["layers"], chain_desc["layers"]
    for i, (a, b) in enumerate(zip(fl, cl)):
        if a != b:
            for k in list(a) + [k for k in b if k not in a]:
                if a.get(k, "<missing>") != b.get(k, "<missing>"):
                    return (
                        f"layer {i}: file has {a}, chain has {b} "
                        f"(key {k!r}: {a.get(k, '<missing>')!r} vs {b.get(k, '<missing>')!r})"
                    )
    if len(fl) != len(cl):
        return f"number of layers: file has {len(fl)}, chain has {len(cl)}"
    return None


# --------------------------------------------------------------------------- save


def _check_chain(chain, argname="chain"):
    if not isinstance(chain, SimpleChain):
        raise TypeError(f"`{argname}` must be a sc.SimpleChain, got {type(chain).__name__}")


def _check_p(p, chain) -> np.ndarray:
    n = chain.num_params
    if not isinstance(p, np.ndarray):
        raise TypeError(f"`p` must be a NumPy array of length {n} (chain.init_params()), got {type(p).__name__}")
    if p.dtype.kind != "f" or p.dtype.itemsize not in (4, 8):
        raise TypeError(f"`p` has dtype {p.dtype}; parameters must be float32 or float64 (e.g. p.astype(np.float32))")
    if p.ndim != 1 or p.shape[0] != n:
        raise ValueError(
            f"`p` has shape {p.shape} but `chain` has {n} parameters; pass the vector of this chain "
            f"(1-D, length {n}, as from chain.init_params())"
        )
    return np.ascontiguousarray(p, dtype=_DTYPES[f"float{8 * p.dtype.itemsize}"])


def save(path, chain, p, /, **metadata) -> pathlib.Path:
    """Save ``chain`` and its parameters ``p`` to ``path`` (an ``.npz`` file), atomically.

    Args:
        path: file to write; ``.npz`` is appended when missing (as ``np.savez`` does).
            An existing file is replaced.
        chain: the ``sc.SimpleChain``.
        p: its parameter vector (1-D float32 or float64 of length ``chain.num_params``);
            the dtype is kept.
        **metadata: anything JSON can hold (numbers, strings, bools, None, lists, dicts;
            NumPy scalars and arrays are stored as numbers and lists), returned by
            ``sc.load(path, with_metadata=True)``.

    Returns:
        the path written (with ``.npz``).

    Raises ``TypeError``/``ValueError`` before writing anything when ``p`` does not fit
    ``chain``, when metadata is not JSON-serialisable, or when a layer cannot be described
    in the file (its kind is not a layer class exported by ``smallchains.layers``).
    The module docstring of ``smallchains.io`` describes the file format.
    """
    import smallchains

    target = _save_path(path)
    _check_chain(chain)
    params = _check_p(p, chain)
    for key, value in metadata.items():
        try:
            _dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"metadata `{key}`={value!r} cannot be stored: {exc}; pass JSON-able values "
                "(numbers, strings, bools, None, lists, dicts), e.g. float(x) or x.tolist()"
            ) from exc
    layer_descs = [layer.describe() for layer in chain.layers]
    header = {
        "format": FORMAT,
        "version": VERSION,
        "smallchains_version": smallchains.__version__,
        "input": _chain_input(chain),
        "layers": layer_descs,
        "num_params": int(chain.num_params),
        "dtype": params.dtype.name,
        "sha256": _digest(params),
        "metadata": metadata,
    }
    try:
        text = _dumps(header)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the description of `chain` is not JSON-serialisable ({exc}): {layer_descs!r}") from exc
    header = json.loads(text)
    # The file must load back: rebuild the chain from what is written and compare.
    rebuilt = _rebuild(header["input"], header["layers"], "`chain`")
    if rebuilt.num_params != chain.num_params or _normalise(rebuilt.describe()) != _normalise(chain.describe()):
        raise ValueError(
            f"`chain` {chain!r} does not rebuild from its layers' describe() (got {rebuilt!r}); "
            "a layer's describe() must list exactly its constructor's arguments"
        )

    meta = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    atomic_write(target, lambda fh: np.savez(fh, params=params, meta=meta), text=False)
    return pathlib.Path(target)


# --------------------------------------------------------------------------- load


def _read(path):
    """``(file_path, header, params)`` of a checked smallchains file (params native-endian, writable)."""
    file = _load_path(path)
    bad = f"{file!r} is not a smallchains file or is truncated/corrupted"
    with open(file, "rb") as fh:
        try:
            npz = np.load(fh, allow_pickle=False)
        except Exception as exc:  # zipfile.BadZipFile, EOFError, ValueError (pickle), ... from a damaged file
            raise ValueError(f"{bad} ({type(exc).__name__}: {exc})") from exc
        if not hasattr(npz, "files"):  # a plain .npy array
            raise ValueError(f"{bad}: it is a .npy array, not an .npz archive")
        with npz:
            names = set(npz.files)
            if not {"params", "meta"} <= names:
                raise ValueError(f"{bad}: it holds arrays {sorted(names)}, expected 'params' and 'meta'")
            try:
                params = npz["params"]
                meta = npz["meta"]
            except Exception as exc:  # bad CRC, truncated member, unreadable .npy header, ...
                raise ValueError(f"{bad} ({type(exc).__name__}: {exc})") from exc
    try:
        if meta.dtype == np.uint8 and meta.ndim == 1:
            text = meta.tobytes().decode("utf-8")
        elif meta.dtype.kind == "U" and meta.ndim == 0:
            text = str(meta[()])
        else:
            raise ValueError(f"'meta' array has dtype {meta.dtype} and shape {meta.shape}")
        header = json.loads(text)
        if not isinstance(header, dict):
            raise ValueError("'meta' is not a JSON object")
    except ValueError as exc:  # includes UnicodeDecodeError and json.JSONDecodeError
        raise ValueError(f"{bad}: unreadable 'meta' ({exc})") from exc
    if header.get("format") != FORMAT:
        raise ValueError(
            f"{file!r} is not a smallchains chain file: its format tag is {header.get('format')!r}, expected {FORMAT!r}"
        )
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{bad}: invalid format version {version!r}")
    if version > VERSION:
        raise ValueError(
            f"{file!r} uses format version {version} (written by smallchains "
            f"{header.get('smallchains_version', '?')}); this smallchains reads up to version {VERSION}: "
            "upgrade smallchains to load it"
        )
    missing = [k for k in ("input", "layers", "num_params", "dtype", "sha256") if k not in header]
    if missing:
        raise ValueError(f"{bad}: 'meta' lacks {missing}")
    if (
        not isinstance(header["input"], list)
        or not isinstance(header["layers"], list)
        or not all(isinstance(d, dict) for d in header["layers"])
    ):
        raise ValueError(
            f"{bad}: invalid chain description in 'meta': input {header['input']!r}, layers {header['layers']!r}"
        )
    dtype = _DTYPES.get(header["dtype"])
    n = header["num_params"]
    if dtype is None or params.dtype != dtype or params.ndim != 1 or params.shape[0] != n:
        raise ValueError(
            f"{bad}: 'params' has dtype {params.dtype} and shape {params.shape}, "
            f"but 'meta' says {header['dtype']} of length {n}"
        )
    if _digest(params) != header["sha256"]:
        raise ValueError(
            f"{file!r} is corrupted: the checksum of its parameters does not match "
            "(the file was modified or damaged after saving)"
        )
    metadata = header.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError(f"{bad}: 'metadata' is {type(metadata).__name__}, not a JSON object")
    params = np.array(params, dtype=dtype.newbyteorder("="), order="C", copy=True)
    return file, header, params


def load(path, with_metadata=False):
    """Load a chain saved by :func:`save`: ``chain, p = sc.load(path)``.

    With ``with_metadata=True`` returns ``(chain, p, metadata)``, ``metadata`` being the
    dict of keyword arguments given to ``save`` (as JSON returns them: tuples become lists).
    ``p`` has the dtype it was saved with and is a new writable array.

    Raises ``FileNotFoundError`` when there is no such file (``path`` or ``path + ".npz"``),
    and ``ValueError`` when the file is not a smallchains file, is truncated or corrupted
    (checksum), comes from a newer format version, names an unknown layer kind, or does not
    rebuild into a chain with the stored number of parameters.
    """
    file, header, params = _read(path)
    chain = _rebuild(header["input"], header["layers"], repr(file))
    if chain.num_params != header["num_params"]:
        raise ValueError(
            f"{file!r}: the rebuilt chain {chain!r} has {chain.num_params} parameters but the file holds "
            f"{header['num_params']}: the file is from a different chain / incompatible version of "
            f"smallchains (written by {header.get('smallchains_version', '?')})"
        )
    if with_metadata:
        return chain, params, header.get("metadata", {})
    return chain, params


def load_params(path, chain, with_metadata=False):
    """Load only the parameter vector saved in ``path``, checking it belongs to ``chain``.

    The file's chain description (input shape and every layer's ``describe()``) must equal
    ``chain``'s; otherwise ``ValueError`` names the first difference. Returns ``p`` (or
    ``(p, metadata)`` with ``with_metadata=True``). Other errors as for :func:`load`.
    """
    _check_chain(chain)
    file, header, params = _read(path)
    mine = {"input": _chain_input(chain), "layers": _normalise([layer.describe() for layer in chain.layers])}
    diff = _first_difference({"input": header["input"], "layers": header["layers"]}, mine)
    if diff is not None:
        raise ValueError(
            f"{file!r} holds parameters of a different chain than `chain`={chain!r}: {diff}; "
            "load it with sc.load(path) to get its own chain"
        )
    if params.shape[0] != chain.num_params:
        raise ValueError(
            f"{file!r} holds {params.shape[0]} parameters but `chain` has {chain.num_params}: "
            "the file is from a different chain / incompatible version"
        )
    if with_metadata:
        return params, header.get("metadata", {})
    return params
