"""The JIT policy module: strict mode, stale-cache purge, progress reporting."""

import os
import subprocess
import sys

import numpy as np

import smallchains as sc
from smallchains import _jit


def test_strict_mode_switches_fastmath_and_cache_off():
    code = (
        "import smallchains._jit as J, smallchains._activations as A; "
        "print(sorted(J.FASTMATH_FLAGS), J.CACHE, sorted(A.FASTMATH_FLAGS))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, SMALLCHAINS_STRICT="1"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == "[] False []"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={k: v for k, v in os.environ.items() if k != "SMALLCHAINS_STRICT"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out.startswith("['afn', 'arcp', 'contract', 'nsz', 'reassoc'] True")
    assert "nnan" not in out and "ninf" not in out


def test_purge_stale_caches(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    (pkg / "__pycache__").mkdir(parents=True)
    src = pkg / "mod.py"
    src.write_text("x = 1\n")
    cached = [pkg / "__pycache__" / "mod.f-1.py311.nbi", pkg / "__pycache__" / "mod.f-1.py311.1.nbc"]
    for f in cached:
        f.write_text("stale")
    monkeypatch.setattr(_jit, "_package_dirs", lambda: [str(pkg)])
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    assert _jit.purge_stale_caches() is True  # no stamp yet: purge and stamp
    assert not any(f.exists() for f in cached)
    for f in cached:
        f.write_text("fresh")
    assert _jit.purge_stale_caches() is False  # sources unchanged: caches kept
    assert all(f.exists() for f in cached)
    src.write_text("x = 2\n")  # a source changed: its caches may embed stale callees
    assert _jit.purge_stale_caches() is True
    assert not any(f.exists() for f in cached)


def test_progress_bar_and_callback(capsys):
    chain = sc.SimpleChain(2, sc.Dense(4, sc.tanh), sc.Dense(1))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 2))
    loss = sc.add_loss(chain, sc.SquaredLoss(X[:, :1] * X[:, 1:]))
    p = chain.init_params(dtype=np.float64)
    seen = []
    h = sc.train_unbatched(
        loss,
        X,
        p,
        sc.Adam(1e-2),
        40,
        progress=True,
        callback=lambda e, v, q: seen.append((e, v, q is p)),
        callback_every=10,
    )
    assert [e for e, _, _ in seen] == [10, 20, 30, 40]
    assert all(same for _, _, same in seen)
    assert [v for _, v, _ in seen] == [h[9], h[19], h[29], h[39]]
    err = capsys.readouterr().err
    assert "40/40" in err  # tqdm wrote its bar to stderr


def test_purge_reaches_numba_cache_dir(tmp_path, monkeypatch):
    import hashlib

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "mod.py").write_text("x = 1\n")
    root = tmp_path / "numbacache"
    full = os.path.abspath(str(pkg))
    sub = root / f"pkg_{hashlib.sha1(full.encode()).hexdigest()}"  # Numba's own naming
    sub.mkdir(parents=True)
    stale = sub / "mod.f-1.py311.nbi"
    stale.write_text("stale")
    monkeypatch.setattr(_jit, "_package_dirs", lambda: [str(pkg)])
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(root))
    assert _jit.purge_stale_caches() is True
    assert not stale.exists()
