"""Test helpers: naive NumPy references, finite differences, canonical lists.

Everything here is written independently of the compiled kernels: the parameter
layout is recomputed from the layer objects (``W`` row-major (out, in), then ``b``)
and the maths is plain float64 NumPy.  The only thing borrowed from the package
is the float64 activation reference (``act(x)`` / ``act.derivative(x)``), which
has its own tests.

Canonical lists (used by parametrised tests, so a new layer kind or activation
cannot escape them; ``test_chain.py`` checks that they are complete):

* ``ALL_ACTIVATIONS``: the module-level ``sc.*`` activation objects.
* ``CHAIN_FACTORIES``: ``{name: factory}`` of small chains covering every layer
  kind, every activation, ``bias=False``, widths 1, 3, 5, 7 and multiples of 4.
"""

from __future__ import annotations

import numpy as np

import smallchains as sc

# --------------------------------------------------------------------------- canonical lists

ALL_ACTIVATIONS = [sc.identity, sc.tanh, sc.relu, sc.sigmoid, sc.softplus, sc.gelu, sc.silu, sc.elu, sc.rbf]
ACTIVATION_IDS = [a.name for a in ALL_ACTIVATIONS]

#: Activations that are smooth everywhere (finite differences are clean at any point).
SMOOTH_ACTIVATIONS = [a for a in ALL_ACTIVATIONS if a.name not in ("relu",)]


def _chains():
    return {
        "tanh_3_5_2": lambda: sc.SimpleChain(3, sc.Dense(5, sc.tanh), sc.Dense(2)),
        "deep_mixed_4_8_7_3": lambda: sc.SimpleChain(
            4, sc.Dense(8, sc.relu), sc.Dense(7, sc.gelu), sc.Dense(3, bias=False)
        ),
        "act_layer_middle": lambda: sc.SimpleChain(3, sc.Dense(4), sc.Activation(sc.sigmoid), sc.Dense(2, sc.silu)),
        "act_layer_first": lambda: sc.SimpleChain(5, sc.Activation(sc.tanh), sc.Dense(6, sc.elu), sc.Dense(1)),
        "width1": lambda: sc.SimpleChain(1, sc.Dense(1, sc.softplus), sc.Dense(1)),
        "nobias_rbf_4k": lambda: sc.SimpleChain(
            4, sc.Dense(8, sc.rbf, bias=False), sc.Dense(12, sc.tanh, bias=False), sc.Dense(4, bias=False)
        ),
        "act_layer_last": lambda: sc.SimpleChain(2, sc.Dense(7, sc.softplus), sc.Dense(3), sc.Activation("silu")),
        "activations_only": lambda: sc.SimpleChain(3, sc.Activation(sc.tanh), sc.Activation(sc.softplus)),
    }


CHAIN_FACTORIES = _chains()
CHAIN_IDS = list(CHAIN_FACTORIES)


def make_chain(name):
    return CHAIN_FACTORIES[name]()


# --------------------------------------------------------------------------- parameter layout


def layer_slices(chain):
    """Per layer: ``(layer, nin, nout, W_slice or None, b_slice or None)``, recomputed from the layers.

    Raises NotImplementedError for a layer kind these references do not know, so a
    new layer kind makes the reference tests fail until a reference is written.
    """
    out = []
    off = 0
    nin = chain.input_dim
    for layer in chain.layers:
        if isinstance(layer, sc.Dense):
            nout = layer.out
            ws = slice(off, off + nout * nin)
            off += nout * nin
            bs = None
            if layer.bias:
                bs = slice(off, off + nout)
                off += nout
            out.append((layer, nin, nout, ws, bs))
        elif isinstance(layer, sc.Activation):
            nout = nin
            out.append((layer, nin, nout, None, None))
        else:
            raise NotImplementedError(f"no NumPy reference for layer kind {type(layer).__name__}")
        nin = nout
    return out, off


def ref_num_params(chain):
    return layer_slices(chain)[1]


def _act_of(layer):
    return layer.activation if isinstance(layer, sc.Dense) else layer.f


def _wb(p, nin, nout, ws, bs):
    W = np.asarray(p[ws], dtype=np.float64).reshape(nout, nin)
    b = None if bs is None else np.asarray(p[bs], dtype=np.float64)
    return W, b


# --------------------------------------------------------------------------- reference forward / backward


def _as2d(X):
    X = np.asarray(X, dtype=np.float64)
    return (X.reshape(1, -1), True) if X.ndim == 1 else (X, False)


def ref_forward(chain, p, X, return_cache=False):
    """float64 outputs of ``chain`` at ``X`` ((n, d) -> (n, m), or (d,) -> (m,))."""
    X, one = _as2d(X)
    layers, _ = layer_slices(chain)
    h = X
    cache = []
    for layer, nin, nout, ws, bs in layers:
        if isinstance(layer, sc.Dense):
            W, b = _wb(p, nin, nout, ws, bs)
            z = h @ W.T
            if b is not None:
                z = z + b
        else:
            z = h.copy()
        act = _act_of(layer)
        y = act(z)
        cache.append((h, z))
        h = y
    out = h[0] if one else h
    return (out, cache) if return_cache else out


def ref_vjp(chain, p, V, X):
    """(parameter cotangent summed over samples, input cotangent per sample), float64.

    ``X`` (n, d) with ``V`` (n, m), or one sample ``X`` (d,) with ``V`` (m,)
    (then the input cotangent has shape (d,)).
    """
    X2, one = _as2d(X)
    V2 = np.asarray(V, dtype=np.float64).reshape(X2.shape[0], -1)
    _, cache = ref_forward(chain, p, X2, return_cache=True)
    layers, npar = layer_slices(chain)
    gp = np.zeros(npar)
    g = V2
    for (layer, nin, nout, ws, bs), (h, z) in zip(reversed(layers), reversed(cache)):
        gz = g * _act_of(layer).derivative(z)
        if isinstance(layer, sc.Dense):
            W, _ = _wb(p, nin, nout, ws, bs)
            gp[ws] = (gz.T @ h).ravel()
            if bs is not None:
                gp[bs] = gz.sum(axis=0)
            g = gz @ W
        else:
            g = gz
    return gp, (g[0] if one else g)


def ref_jvp(chain, p, X, dX=None, dp=None):
    """Forward-mode tangent of the outputs: d chain/dx . dX + d chain/dp . dp (float64)."""
    X2, one = _as2d(X)
    _, cache = ref_forward(chain, p, X2, return_cache=True)
    layers, _ = layer_slices(chain)
    t = np.zeros_like(X2) if dX is None else np.asarray(dX, dtype=np.float64).reshape(X2.shape)
    for (layer, nin, nout, ws, bs), (h, z) in zip(layers, cache):
        if isinstance(layer, sc.Dense):
            W, _ = _wb(p, nin, nout, ws, bs)
            tz = t @ W.T
            if dp is not None:
                dW, db = _wb(dp, nin, nout, ws, bs)
                tz = tz + h @ dW.T
                if db is not None:
                    tz = tz + db
        else:
            tz = t
        t = tz * _act_of(layer).derivative(z)
    return t[0] if one else t


# --------------------------------------------------------------------------- losses and penalties


def ref_loss(kind, Yhat, T, delta=1.0):
    """(mean over samples of the per-sample loss summed over outputs, dL/dYhat) in float64.

    kind: "squared", "absolute", "huber" (targets T of Yhat's shape) or "logitce"
    (integer labels T).
    """
    Yhat = np.asarray(Yhat, dtype=np.float64)
    n = Yhat.shape[0]
    if kind == "logitce":
        lab = np.asarray(T).astype(np.int64)
        zmax = Yhat.max(axis=1, keepdims=True)
        lse = zmax[:, 0] + np.log(np.exp(Yhat - zmax).sum(axis=1))
        val = np.mean(lse - Yhat[np.arange(n), lab])
        P = np.exp(Yhat - lse[:, None])
        P[np.arange(n), lab] -= 1.0
        return val, P / n
    R = Yhat - np.asarray(T, dtype=np.float64).reshape(Yhat.shape)
    if kind == "squared":
        return np.sum(R * R) / n, 2 * R / n
    if kind == "absolute":
        return np.sum(np.abs(R)) / n, np.sign(R) / n
    if kind == "huber":
        a = np.abs(R)
        h = np.where(a <= delta, 0.5 * R * R, delta * (a - 0.5 * delta))
        gr = np.where(a <= delta, R, delta * np.sign(R))
        return np.sum(h) / n, gr / n
    raise ValueError(kind)


def weight_mask(chain):
    """Boolean mask over the flat parameter vector: True on weight matrices (not biases)."""
    layers, npar = layer_slices(chain)
    mask = np.zeros(npar, dtype=bool)
    for _layer, _nin, _nout, ws, _bs in layers:
        if ws is not None:
            mask[ws] = True
    return mask


def ref_penalty(chain, p, kind, lam):
    """(value, gradient) of lam*sum|W| ("l1") or lam*sum W^2 ("l2") over weights only."""
    p = np.asarray(p, dtype=np.float64)
    mask = weight_mask(chain)
    g = np.zeros_like(p)
    if kind == "l1":
        g[mask] = lam * np.sign(p[mask])
        return lam * np.abs(p[mask]).sum(), g
    g[mask] = 2 * lam * p[mask]
    return lam * (p[mask] ** 2).sum(), g


def ref_valgrad(chain, p, X, kind, T, delta=1.0, penalty=None):
    """Reference (loss value, gradient wrt p) for a loss kind and optional ("l1"|"l2", lam)."""
    Yhat = ref_forward(chain, p, X)
    val, gY = ref_loss(kind, Yhat, T, delta)
    gp, _ = ref_vjp(chain, p, gY, X)
    if penalty is not None:
        pv, pg = ref_penalty(chain, p, *penalty)
        val += pv
        gp = gp + pg
    return val, gp


# --------------------------------------------------------------------------- finite differences


def central_diff_grad(f, x, h=1e-6):
    """Gradient of scalar ``f`` at float64 vector ``x`` by central differences (x is not modified)."""
    x = np.array(x, dtype=np.float64)
    g = np.empty_like(x)
    flat = x.reshape(-1)
    gf = g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f(x)
        flat[i] = old - h
        fm = f(x)
        flat[i] = old
        gf[i] = (fp - fm) / (2 * h)
    return g


def central_diff_dir(f, x, d, h=1e-6):
    """Directional derivative (f(x + h d) - f(x - h d)) / 2h of an array-valued ``f``."""
    x = np.asarray(x, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64)
    return (np.asarray(f(x + h * d)) - np.asarray(f(x - h * d))) / (2 * h)


def random_data(chain, n, dtype=np.float64, seed=0, scale=1.0):
    """Seeded inputs of shape (n, d) (or (d,) when n is None)."""
    rng = np.random.default_rng(seed)
    shape = (chain.input_dim,) if n is None else (n, chain.input_dim)
    return (scale * rng.standard_normal(shape)).astype(dtype)


def random_params(chain, dtype=np.float64, seed=0, bias_scale=0.3):
    """Glorot weights plus non-zero biases (so bias gradients are exercised)."""
    p = chain.init_params(seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 1000)
    layers, _ = layer_slices(chain)
    for _layer, _nin, _nout, _ws, bs in layers:
        if bs is not None:
            p[bs] = bias_scale * rng.standard_normal(bs.stop - bs.start)
    return p


# --------------------------------------------------------------------------- population-model gradient checks


def central_differences(f, x, h=1e-5):
    """Rows d f / d x_k by central differences (f returns a scalar or an array)."""
    return np.array([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(x.shape[0])])


def check_map_gradients(P, x, etas):
    """The MAP objective's exact gradients in x and in every subject's eta against central differences."""
    v, gx, ge = P.map_objective(x, etas, 1)
    assert np.isfinite(v)
    np.testing.assert_allclose(gx, central_differences(lambda z: P.map_objective(z, etas, 0), x), rtol=1e-5, atol=1e-6)
    gef = central_differences(lambda z: P.map_objective(x, z.reshape(etas.shape), 0), etas.ravel())
    np.testing.assert_allclose(ge, gef.reshape(etas.shape), rtol=1e-5, atol=1e-6)


def check_foce_derivatives(P, x, eta):
    """Each subject's G = df/deta (forward sensitivities) against differences of its predictions, and
    the FOCE-I gradient against central differences of the OFV (modes warm-started, inner loop tight)."""
    for s in P.subjects:
        G = s.predict(x, eta, directions=True)[5]
        Gf = central_differences(lambda e, s=s: s.predict(x, e)[2], eta).T
        np.testing.assert_allclose(G, Gf, rtol=1e-6, atol=1e-8)
    v, etas, res = P.foce(x)
    g = P.foce_gradient(x, res)
    h = 1e-4
    gf = np.array([(P.foce(x + h * e, etas)[0] - P.foce(x - h * e, etas)[0]) / (2 * h) for e in np.eye(x.shape[0])])
    np.testing.assert_allclose(g, gf, rtol=1e-4, atol=1e-5 * np.abs(gf).max())


def check_foce_gradient(P, x, h=1e-3, rtol=1e-3):
    """FOCE-I's exact gradient at ``x`` against central differences of the OFV (modes warm-started).
    The step 1e-3: with 1e-4 the inner loop's tolerance shows (4e-3 relative on some subjects, for
    diagonal, block and full Omegas alike)."""
    _, etas, res = P.foce(x)
    g = P.foce_gradient(x, res)
    gf = np.array([(P.foce(x + h * e, etas)[0] - P.foce(x - h * e, etas)[0]) / (2 * h) for e in np.eye(x.shape[0])])
    np.testing.assert_allclose(g, gf, rtol=rtol, atol=1e-4 * np.abs(gf).max())


def small_data(n=8, seed=3):
    """A small population for the estimation-method tests: one-compartment oral, two random
    effects, proportional error, ``n`` subjects simulated at the model's initial values."""
    import pandas as pd

    from smallchains import pk

    m = pk.PopulationModel(
        "one_cpt_oral", dict(ka=1.2, CL=3.0, V=25.0), eta=["ka", "CL"], omega_init=0.1, error="proportional", sigma=0.1
    )
    rows = []
    for i in range(n):
        rows.append(dict(ID=i + 1, TIME=0.0, AMT=100.0, EVID=1, MDV=1, CMT=1, DV=np.nan))
        rows += [dict(ID=i + 1, TIME=t, AMT=0.0, EVID=0, MDV=0, CMT=2, DV=1.0) for t in (0.5, 1, 2, 4, 8, 12, 24)]
    (data,), _ = pk.simulate_data(m, pk.read_data(pd.DataFrame(rows)), m.x0, seed=seed)
    return m, data


def quadrature_term(s, x, omega2, grid_points=4001):
    """-2 log of a subject's marginal likelihood over one random effect (without 2 pi per
    observation), by quadrature: -2 log int exp(-l(eta) / 2) N(eta; 0, omega2) d eta."""
    import math

    from scipy.integrate import quad

    etas = np.linspace(-8, 8, grid_points) * math.sqrt(omega2)
    ls = np.array([s.data_term(x, np.array([e]), 0) for e in etas])
    shift = ls.min()

    def integrand(e):
        return math.exp(-0.5 * (s.data_term(x, np.array([e]), 0) - shift) - e * e / (2 * omega2))

    sd = math.sqrt(omega2)
    val, _ = quad(integrand, -10 * sd, 10 * sd, points=[etas[np.argmin(ls)]], limit=400, epsabs=0, epsrel=1e-12)
    return shift - 2.0 * math.log(val / math.sqrt(2 * math.pi * omega2))
