"""``sc.save`` / ``sc.load`` / ``sc.load_params``: round trips, atomic writes, damaged files."""

from __future__ import annotations

import hashlib
import io
import json
import os

import numpy as np
import pytest

import smallchains as sc
import smallchains.layers
from smallchains import io as scio


def small_chain():
    return sc.SimpleChain(3, sc.Dense(5, sc.tanh), sc.Dense(2))


def saved(tmp_path, dtype=np.float32, name="model.npz", **metadata):
    chain = small_chain()
    p = chain.init_params(seed=1, dtype=dtype)
    path = sc.save(tmp_path / name, chain, p, **metadata)
    return chain, p, path


def read_npz(path):
    with np.load(path, allow_pickle=False) as z:
        return z["params"], json.loads(z["meta"].tobytes().decode("utf-8"))


def write_npz(path, params, header):
    np.savez(path, params=params, meta=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))


def leftovers(directory):
    return [f for f in os.listdir(directory) if f.endswith(".tmp")]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_dense(tmp_path, dtype):
    chain, p, path = saved(tmp_path, dtype, epochs=3, note="hi", shape=(2, 3), loss=np.float32(0.5))
    assert path == tmp_path / "model.npz" and path.is_file()
    chain2, p2 = sc.load(path)
    assert p2.dtype == np.dtype(dtype) and p2.flags.writeable and p2.flags.c_contiguous
    assert np.array_equal(p2, p) and p2.tobytes() == p.tobytes()
    assert chain2.describe() == chain.describe() and chain2.num_params == chain.num_params
    X = np.random.default_rng(0).standard_normal((7, 3)).astype(dtype)
    assert chain2(X, p2).tobytes() == chain(X, p).tobytes()
    _, _, meta = sc.load(str(path), with_metadata=True)
    assert meta == {"epochs": 3, "note": "hi", "shape": [2, 3], "loss": 0.5}


def test_round_trip_all_layer_options(tmp_path):
    chain = sc.SimpleChain(4, sc.Dense(8, sc.relu), sc.Activation("sigmoid"), sc.Dense(3, sc.gelu, bias=False))
    p = chain.init_params(seed=3, dtype=np.float64)
    sc.save(tmp_path / "m.npz", chain, p)
    chain2, p2 = sc.load(tmp_path / "m.npz")
    assert chain2.describe() == chain.describe()
    assert np.array_equal(p2, p)


def test_file_format(tmp_path):
    chain, p, path = saved(tmp_path, np.float64, a=1)
    params, header = read_npz(path)
    assert params.dtype == np.float64 and np.array_equal(params, p)
    assert header["format"] == "smallchains-chain" and header["version"] == 1
    assert header["smallchains_version"] == sc.__version__
    assert header["input"] == [3] and header["num_params"] == chain.num_params and header["dtype"] == "float64"
    assert header["layers"] == [layer.describe() for layer in chain.layers]
    assert header["sha256"] == hashlib.sha256(p.tobytes()).hexdigest()
    assert header["metadata"] == {"a": 1}


def test_suffix_handling(tmp_path):
    chain = small_chain()
    p = chain.init_params()
    path = sc.save(tmp_path / "model", chain, p)
    assert path == tmp_path / "model.npz" and sorted(os.listdir(tmp_path)) == ["model.npz"]
    for name in ("model", "model.npz"):
        assert np.array_equal(sc.load(tmp_path / name)[1], p)
        assert np.array_equal(sc.load_params(str(tmp_path / name), chain), p)
    # A name with another suffix gets .npz appended too (as np.savez does).
    assert sc.save(tmp_path / "model.bin", chain, p) == tmp_path / "model.bin.npz"


def test_save_replaces_existing_file(tmp_path):
    chain, p, path = saved(tmp_path)
    p2 = p + 1
    sc.save(path, chain, p2, run=2)
    _, p_loaded, meta = sc.load(path, with_metadata=True)
    assert np.array_equal(p_loaded, p2) and meta == {"run": 2}
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_saved_file_is_not_private(tmp_path):
    _, _, path = saved(tmp_path)
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


# --------------------------------------------------------------------------- atomic writes


@pytest.mark.parametrize("target", ["savez", "replace"])
def test_failed_write_keeps_old_file(tmp_path, monkeypatch, target):
    chain, p, path = saved(tmp_path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    if target == "savez":
        monkeypatch.setattr(scio.np, "savez", boom)
    else:
        monkeypatch.setattr(scio.os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        sc.save(path, chain, p + 1)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == [] and sorted(os.listdir(tmp_path)) == ["model.npz"]
    assert np.array_equal(sc.load(path)[1], p)


def test_interrupted_write_keeps_old_file(tmp_path, monkeypatch):
    chain, p, path = saved(tmp_path)
    before = path.read_bytes()
    real_savez = np.savez

    def partial(file, **arrays):  # write part of the file, then get interrupted
        real_savez(file, **arrays)
        file.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(scio.np, "savez", partial)
    with pytest.raises(KeyboardInterrupt):
        sc.save(path, chain, p + 1)
    assert path.read_bytes() == before and leftovers(tmp_path) == []


# --------------------------------------------------------------------------- bad arguments to save


@pytest.mark.parametrize(
    "bad_p, error, match",
    [
        (np.zeros(5, np.float32), ValueError, "has 32 parameters"),
        (np.zeros((32, 1), np.float32), ValueError, "shape"),
        (np.zeros(32, np.int64), TypeError, "float32 or float64"),
        (np.zeros(32, np.float16), TypeError, "float32 or float64"),
        ([0.0] * 32, TypeError, "NumPy array"),
    ],
)
def test_wrong_p_writes_nothing(tmp_path, bad_p, error, match):
    with pytest.raises(error, match=match):
        sc.save(tmp_path / "m.npz", small_chain(), bad_p)
    assert os.listdir(tmp_path) == []


def test_bad_metadata_writes_nothing(tmp_path):
    chain = small_chain()
    with pytest.raises(TypeError, match="metadata `fn`"):
        sc.save(tmp_path / "m.npz", chain, chain.init_params(), fn=print)
    with pytest.raises(TypeError, match="chain"):
        sc.save(tmp_path / "m.npz", "not a chain", chain.init_params())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sc.save(tmp_path / "nodir" / "m.npz", chain, chain.init_params())
    assert os.listdir(tmp_path) == []


def test_big_endian_params(tmp_path):
    chain = small_chain()
    p = chain.init_params(dtype=np.float64)
    sc.save(tmp_path / "m.npz", chain, p.astype(">f8"))
    p2 = sc.load(tmp_path / "m.npz")[1]
    assert p2.dtype == np.float64 and np.array_equal(p2, p)


# --------------------------------------------------------------------------- damaged or foreign files


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        sc.load(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        sc.load_params(tmp_path / "nope.npz", small_chain())


def test_truncated_file(tmp_path):
    _, _, path = saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a smallchains file or is truncated/corrupted"):
        sc.load(path)


@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(1000), b"", b"PK\x03\x04garbage"])
def test_random_bytes(tmp_path, content):
    path = tmp_path / "junk.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a smallchains file"):
        sc.load(path)


def test_flipped_byte_in_zip(tmp_path):
    _, _, path = saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[150] ^= 0xFF  # inside the params member: zip CRC (or the header parser) catches it
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted"):
        sc.load(path)


def test_other_npz_and_npy(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.arange(3))
    with pytest.raises(ValueError, match="expected 'params' and 'meta'"):
        sc.load(tmp_path / "other.npz")
    np.save(tmp_path / "arr.npy", np.arange(3.0))
    with pytest.raises(ValueError, match="not a smallchains file"):
        sc.load(tmp_path / "arr.npy")


def test_tampered_params(tmp_path):
    _, p, path = saved(tmp_path)
    params, header = read_npz(path)
    params = params.copy()
    params[0] += 1
    write_npz(path, params, header)  # old checksum
    with pytest.raises(ValueError, match="corrupted"):
        sc.load(path)
    with pytest.raises(ValueError, match="corrupted"):
        sc.load_params(path, small_chain())


def test_wrong_format_tag_and_newer_version(tmp_path):
    _, _, path = saved(tmp_path)
    params, header = read_npz(path)
    write_npz(path, params, {**header, "format": "something-else"})
    with pytest.raises(ValueError, match="format tag"):
        sc.load(path)
    write_npz(path, params, {**header, "version": 2})
    with pytest.raises(ValueError, match="version 2.*upgrade"):
        sc.load(path)


def test_unknown_layer_kind(tmp_path):
    _, _, path = saved(tmp_path)
    params, header = read_npz(path)
    header["layers"][1]["kind"] = "Transformer"
    write_npz(path, params, header)
    with pytest.raises(ValueError, match="unknown layer kind 'Transformer'"):
        sc.load(path)
    header["layers"][1]["kind"] = "ActivationFunction"  # exported by smallchains.layers but not a Layer
    write_npz(path, params, header)
    with pytest.raises(ValueError, match="unknown layer kind 'ActivationFunction'"):
        sc.load(path)


def test_num_params_mismatch(tmp_path):
    _, _, path = saved(tmp_path)
    params, header = read_npz(path)
    header["layers"][1]["out"] = 3  # consistent file, but its chain has other sizes than its parameters
    write_npz(path, params, header)
    with pytest.raises(ValueError, match="different chain / incompatible version"):
        sc.load(path)


# --------------------------------------------------------------------------- load_params


def test_load_params(tmp_path):
    chain, p, path = saved(tmp_path, np.float64, seed=4)
    p2 = sc.load_params(path, small_chain())
    assert p2.dtype == np.float64 and np.array_equal(p2, p)
    assert sc.load_params(path, chain, with_metadata=True)[1] == {"seed": 4}


@pytest.mark.parametrize(
    "other, match",
    [
        (sc.SimpleChain(3, sc.Dense(5, sc.tanh), sc.Dense(3)), "layer 1.*key 'out': 2 vs 3"),
        (sc.SimpleChain(3, sc.Dense(5, sc.relu), sc.Dense(2)), "layer 0.*key 'activation': 'tanh' vs 'relu'"),
        (sc.SimpleChain(4, sc.Dense(5, sc.tanh), sc.Dense(2)), "input shape: file has \\[3\\], chain has \\[4\\]"),
        (sc.SimpleChain(3, sc.Dense(5, sc.tanh), sc.Dense(2), sc.Activation("relu")), "number of layers"),
    ],
)
def test_load_params_different_chain(tmp_path, other, match):
    _, _, path = saved(tmp_path)
    with pytest.raises(ValueError, match=match):
        sc.load_params(path, other)


# --------------------------------------------------------------------------- convolutional chains


@pytest.mark.skipif(not hasattr(smallchains.layers, "Conv"), reason="no convolutional layers yet")
def test_round_trip_conv(tmp_path):
    L = smallchains.layers  # the layers may not be re-exported as sc.Conv ... yet
    chain = sc.SimpleChain((1, 8, 8), L.Conv(2, 3, sc.relu), L.MaxPool(2), L.Flatten(), L.Dense(3))
    p = chain.init_params(seed=0)
    sc.save(tmp_path / "conv.npz", chain, p)
    chain2, p2 = sc.load(tmp_path / "conv.npz")
    assert getattr(chain2, "input_shape", None) == getattr(chain, "input_shape", None)
    assert chain2.describe() == chain.describe() and np.array_equal(p2, p)
    X = np.random.default_rng(0).standard_normal((4, *chain.input_shape)).astype(np.float32)
    assert chain2(X, p2).tobytes() == chain(X, p).tobytes()
    assert np.array_equal(sc.load_params(tmp_path / "conv.npz", chain), p)


def test_no_pickle_needed(tmp_path):
    _, _, path = saved(tmp_path, meta=[1, {"a": None}])
    with open(path, "rb") as fh:
        data = fh.read()
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        assert z["meta"].dtype == np.uint8 and z["params"].dtype == np.float32
