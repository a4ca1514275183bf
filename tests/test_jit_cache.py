"""The on-disk kernel cache in every partial, killed and corrupt state a user can reach: each
state is built in a private NUMBA_CACHE_DIR, then every main entry point runs in new processes
and must give the warm run's exact output (no crash, no "Symbol not found", no wrong answer).

The first compile of a parallel kernel's caller in a process where the parallel callee came
from the cache used to leave an entry that crashed the *next* process (LLVM ERROR: Symbol not
found: allocate_sched, or a segfault); these tests reproduce that state and fail without the fix.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from smallchains import _jit

JOB = os.path.join(os.path.dirname(__file__), "jobs", "entry_points.py")
ALL = "training,ode,pk"

pytestmark = pytest.mark.slow


def _env(cache):
    env = dict(os.environ)
    env.pop("NUMBA_DISABLE_JIT", None)
    if cache is None:
        env.pop("NUMBA_CACHE_DIR", None)
    else:
        env["NUMBA_CACHE_DIR"] = str(cache)
    return env


def run(cache, jobs=ALL, timeout=1800):
    r = subprocess.run(
        [sys.executable, "-W", "always::UserWarning", JOB, jobs],
        env=_env(cache),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return r.returncode, r.stdout, r.stderr


def folders(cache, monkeypatch):
    with monkeypatch.context() as m:
        m.setenv("NUMBA_CACHE_DIR", str(cache))
        return _jit.cache_folders()


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """The reference output, and a full cache copied (in NUMBA_CACHE_DIR's layout) from the warm in-tree one."""
    rc, out, err = run(None)
    assert rc == 0, err[-3000:]
    root = tmp_path_factory.mktemp("warm-cache")
    mp = pytest.MonkeyPatch()
    try:
        targets = folders(root, mp)
        mp.delenv("NUMBA_CACHE_DIR", raising=False)
        sources = _jit.cache_folders()
    finally:
        mp.undo()
    for src, dst in zip(sources, targets, strict=True):
        os.makedirs(dst, exist_ok=True)
        if os.path.isdir(src):
            for f in os.listdir(src):
                if f.endswith((".nbi", ".nbc")):
                    shutil.copy2(os.path.join(src, f), dst)
    return out, root


def copy_cache(warm_root, tmp_path):
    dst = tmp_path / "cache"
    shutil.copytree(warm_root, dst)
    return dst


def entries(cache, prefix):
    found = []
    for d in os.listdir(cache):
        for f in os.listdir(os.path.join(cache, d)):
            if f.startswith(prefix):
                found.append(os.path.join(cache, d, f))
    return found


@pytest.mark.parametrize(
    "kernel",
    [
        "_train.train_full-",
        "_train.train_minibatch-",
        "_engine._valgrad_threads-",
        "_engine.vjp-",
        "problem._neural",
    ],
)
def test_one_kernels_entries_deleted_then_every_entry_point_twice(warm, tmp_path, kernel):
    ref, root = warm
    cache = copy_cache(root, tmp_path)
    gone = entries(cache, kernel)
    assert gone, f"no cache entry starts with {kernel!r}: the kernel list of this test is out of date"
    for f in gone:
        os.remove(f)
    for attempt in range(2):  # the second process loads what the first one compiled
        rc, out, err = run(cache)
        assert rc == 0, f"attempt {attempt}: exit {rc}\n{err[-3000:]}"
        assert out == ref
        assert "Symbol not found" not in err


@pytest.mark.parametrize("order", ["pk,ode,training"])
def test_entry_points_compiled_in_another_order(warm, tmp_path, order):
    """Entry points that share kernels, compiled first by one then loaded by another."""
    ref, root = warm
    cache = copy_cache(root, tmp_path)
    for prefix in ("_train.", "_user."):
        for f in entries(cache, prefix):
            os.remove(f)
    rc, out, err = run(cache, order)
    assert rc == 0, err[-3000:]
    assert sorted(out.splitlines()) == sorted(ref.splitlines())
    rc, out, err = run(cache)
    assert rc == 0, err[-3000:]
    assert out == ref


def test_first_compiles_killed_at_several_points(warm, tmp_path):
    """SIGKILL a cold compile at several moments (each run resumes from the previous one's cache), then
    complete it and load it: the lightest job that reaches the parallel kernels (one float32 training)."""
    ref = run(None, "dense32")  # the in-tree cache, warm after the rest of the suite
    assert ref[0] == 0, ref[2][-3000:]
    cache = tmp_path / "cache"
    cache.mkdir()
    for delay in (2.0, 8.0, 20.0):
        p = subprocess.Popen(
            [sys.executable, JOB, "dense32"], env=_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
    for _ in range(2):  # completes the compile, then loads it all
        rc, out, err = run(cache, "dense32")
        assert rc == 0, err[-3000:]
        assert out == ref[1]


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _flip(path):
    with open(path, "r+b") as f:
        b = bytearray(f.read())
        b[len(b) // 2] ^= 0xFF
        f.seek(0)
        f.write(b)


def _garbage(path):
    with open(path, "wb") as f:
        f.write(b"not a cache entry")


@pytest.mark.parametrize("damage, suffix", [(_truncate, ".nbc"), (_flip, ".nbc"), (_garbage, ".nbi")])
def test_corrupt_entry_is_recompiled_with_a_warning(warm, tmp_path, damage, suffix):
    ref, root = warm
    cache = copy_cache(root, tmp_path)
    targets = [f for f in entries(cache, "_train.train_full-") if f.endswith(suffix)]
    assert targets
    for f in targets:
        damage(f)
    rc, out, err = run(cache, "training")
    assert rc == 0, err[-3000:]
    assert out == ref.splitlines(keepends=True)[0]
    assert "CompileCacheWarning" in err and "train_full" in err, err[-3000:]
    rc, out, err = run(cache, "training")  # the recompiled entry is good again
    assert rc == 0 and "CompileCacheWarning" not in err, err[-3000:]
    assert out == ref.splitlines(keepends=True)[0]
