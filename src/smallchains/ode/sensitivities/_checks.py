"""One-off checks of a right-hand side's derivative kernels against central differences."""

from __future__ import annotations

import numpy as np


def check_jvp(fn, u0, p, t, fw, tol=1e-5):
    """Compare the Jacobian-vector product with central differences along a random direction, once."""
    fn.jvp_addr  # noqa: B018 - compiled before the kernel is called
    n, m = u0.shape[0], p.shape[0]
    rng = np.random.default_rng(54321)
    u = u0 + 0.05 * (1.0 + np.abs(u0)) * rng.uniform(0.5, 1.0, n)
    du = rng.normal(size=n)
    dp = rng.normal(size=m) * (1e-2 + np.abs(p)) * 0.1
    out = rng.normal(size=n) * 1e3  # must be overwritten
    fn.jvp(out, u, p, t, du, dp, fn.iw, fw)
    e = 1e-6
    a = np.empty(n)
    b = np.empty(n)
    fn.rhs(a, u + e * du, p + e * dp, t, fn.iw, fw)
    fn.rhs(b, u - e * du, p - e * dp, t, fn.iw, fw)
    fd = (a - b) / (2 * e)
    scale = max(np.abs(fd).max(initial=0.0), 1e-8)
    if not np.all(np.isfinite(out)) or np.any(np.abs(out - fd) > tol * scale + 1e-7 * np.abs(fd)):
        how = (
            "complex-step differentiation (is the code analytic?)"
            if getattr(fn, "complex_step_jvp", False)
            else "the supplied jvp"
        )
        raise ValueError(
            f"the Jacobian-vector product of {fn.name} from {how} disagrees with finite "
            f"differences (jvp {out[:6]}, differences {fd[:6]}); fix it, pass jvp=..., or "
            "check_derivatives=False to skip this check"
        )


def check_vjp(fn, u0, p, t, fw, tol=1e-5):
    """Compare the right-hand side's vector-Jacobian product with central differences, once.

    Complex-step derivatives are exact for analytic code but silently wrong for code
    that is not (``abs`` of a state drops the derivative's sign); a hand-written vjp may
    simply be wrong.  Checked near ``u0`` (shifted, so that states starting at zero do
    not hide terms) for the states and at most 40 parameters.
    """
    fn.vjp_addr  # noqa: B018 - compiled before the kernel is called
    n, m = u0.shape[0], p.shape[0]
    rng = np.random.default_rng(12345)
    u = u0 + 0.05 * (1.0 + np.abs(u0)) * rng.uniform(0.5, 1.0, n)
    v = rng.normal(size=n)
    # lu must be overwritten and lp accumulated into: start both from garbage and check that
    lu = rng.normal(size=n) * 1e3
    lp0 = rng.normal(size=m)
    lp = lp0.copy()
    fn.vjp(lu, lp, v, u, p, t, fn.iw, fw)
    lp = lp - lp0
    da = np.empty(n)
    db = np.empty(n)

    def fd(x, k, which):
        e = 1e-6 * max(1.0, abs(x[k]))
        a = x.copy()
        b = x.copy()
        a[k] += e
        b[k] -= e
        if which == "u":
            fn.rhs(da, a, p, t, fn.iw, fw)
            fn.rhs(db, b, p, t, fn.iw, fw)
        else:
            fn.rhs(da, u, a, t, fn.iw, fw)
            fn.rhs(db, u, b, t, fn.iw, fw)
        return float(v @ (da - db)) / (2 * e)

    fu = np.array([fd(u, k, "u") for k in range(n)])
    ks = np.arange(m) if m <= 40 else np.sort(rng.choice(m, 40, replace=False))
    fp = np.array([fd(p, k, "p") for k in ks])
    scale = max(np.abs(fu).max(initial=0.0), np.abs(fp).max(initial=0.0), 1e-8)
    bad_u = np.abs(lu - fu) > tol * scale + 1e-7 * np.abs(fu)
    bad_p = np.abs(lp[ks] - fp) > tol * scale + 1e-7 * np.abs(fp)
    if np.any(bad_u) or np.any(bad_p) or not (np.all(np.isfinite(lu)) and np.all(np.isfinite(lp))):
        how = (
            "complex-step differentiation (is the code analytic? abs(), min/max or branches on the state break it)"
            if getattr(fn, "complex_step", False)
            else "the supplied vjp"
        )
        where = [f"du/du[{k}]" for k in np.flatnonzero(bad_u)] + [f"du/dp[{ks[k]}]" for k in np.flatnonzero(bad_p)]
        raise ValueError(
            f"the derivatives of {fn.name} from {how} disagree with finite differences at "
            f"{', '.join(where[:6]) or 'non-finite values'} (vjp {np.r_[lu, lp[ks]][:6]}, "
            f"differences {np.r_[fu, fp][:6]}); a vjp must overwrite lu and add to lp; fix it "
            "or pass vjp=..., or check_derivatives=False to skip this check"
        )
