"""Vectorisable activation functions (and derivatives) for Numba ``@njit`` code.

Why this module exists
----------------------
Inside ``@njit`` code a scalar ``np.tanh`` / ``math.exp`` is a libm call per
element; with this numba/llvmlite there is no SVML, so such a call blocks LLVM's
loop vectoriser.  Every activation here is therefore written branch-free with
``+ - * /``, ``abs``, compare/select (``a if c else b``), integer and bit
operations only.  ``exp`` is our own: ``x = k*ln2 + r`` (Cody-Waite),
``expm1(r)`` by a Taylor polynomial (degree 7 in float32, 13 in float64), and
``2**k`` built by shifting ``k + bias`` into the exponent field and
bit-casting (:func:`_int_bits_as_float`, a ``numba.extending.intrinsic``).

Float32 stays float32: every kernel exists twice, built by :func:`_build` with
constants of the right NumPy type, and a stub per activation is overloaded on
the argument type (``numba.extending.overload``), so ``float32`` input never
meets a float64 constant.  Inspecting ``act_forward``'s assembly for float32
input shows ``<16 x float>`` (AVX-512) vector code for every activation.

Formulas (``e`` = our exp, ``em1`` = our expm1; all selects NaN-preserving):

* tanh:     ``m = expm1(-2|x|)``, ``tanh = -m/(2+m)`` (sign restored),
            ``tanh' = 4 e/(1+e)**2`` with ``e = exp(-2|x|)`` -- accurate in the
            tails (no ``1 - t*t`` cancellation) and relatively accurate near 0.
* sigmoid:  ``e = exp(-|x|)``, ``1/(1+e)`` or ``e/(1+e)``, ``s' = e/(1+e)**2``.
* softplus: ``max(x,0) + log1p(exp(-|x|))``; the ``log1p(u)``, ``u`` in [0, 1],
            is ``k ln2 + 2 atanh(f/(2+f))`` with ``f = u`` or ``(u-1)/2``
            (``k`` = 0 or 1) and an odd Taylor series (``|s| <= 0.1716``).
* gelu:     exact ``x Phi(x)``; with ``a = |x|/sqrt2``,
            ``erfc(a) = exp(-a*a) g(y) / (1 + 2a)``, ``y = (a-K)/(a+K)``, where
            ``g(y) = (1+2a) exp(a*a) erfc(a)`` is a Chebyshev-truncated polynomial
            (float32: K=3, 12 terms; float64: K=3.5, 24 terms; generated with
            mpmath by :func:`_erfcx_poly_coefficients`).  ``gelu' = Phi + x phi``.
* silu ``x s(x)``, elu (alpha=1, ``expm1``), rbf ``exp(-x*x)``, relu, identity.

Large and non-finite input: arguments are clamped so nothing overflows, and
``exp`` flushes to exactly 0 below its range, so ``+-inf`` give the limits
(tanh -> +-1, sigmoid -> 1/0, softplus -> inf/0, gelu -> inf/0, silu -> inf/0,
elu -> inf/-1, rbf -> 0; every derivative to its limit).  NaN in gives NaN out,
derivatives included (except identity, whose derivative is defined as 1).

Accuracy (measured, see ``MAX_ERRORS`` / ``MAX_DERIV_ERRORS``)
----------------------------------------------------------------
Measured against the float64 NumPy/SciPy :func:`reference` over 2e6 evenly
spaced points in [-20, 20] plus special points (0, +-tiny, breakpoints, the
float32 grid near 0).  ``abs_err`` is ``max |f - ref|`` over points where
``|ref| <= 1``; ``rel_err`` is ``max |f - ref| / |ref|`` over points where
``|ref| > 1`` (0.0 when there are none, e.g. tanh).  Values in the dicts are
the measured maxima rounded *up* to two significant digits.  Float32 reaches
<= ~2.5e-7 absolute (a few ulp of 1) and ~1.2e-7 relative; float64 reaches
<= ~5e-16 absolute and ~2e-16 relative, far inside the 1e-14 goal.  Only
absolute accuracy is promised for tiny values (e.g. sigmoid(-80) in float32
is relatively accurate to ~1e-5 only, because ``2**k`` scaling of the tail is
exact but the ``k*ln2`` reduction error grows with ``|k|``).

Numba options: every kernel is compiled with ``fastmath=FASTMATH_FLAGS`` (no
``nnan``/``ninf`` so NaN tests survive) and ``error_model='numpy'`` (no
ZeroDivisionError branch in the loop, which would block vectorisation).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

FASTMATH_FLAGS = {"nsz", "arcp", "contract", "afn", "reassoc"}

ACT_IDENTITY = 0
ACT_TANH = 1
ACT_RELU = 2
ACT_SIGMOID = 3
ACT_SOFTPLUS = 4
ACT_GELU = 5
ACT_SILU = 6
ACT_ELU = 7
ACT_RBF = 8
ACTIVATION_NAMES = (
    "identity", "tanh", "relu", "sigmoid", "softplus", "gelu", "silu", "elu", "rbf",
)

_JIT = dict(fastmath=FASTMATH_FLAGS, error_model="numpy", boundscheck=False)

# Measured maximum errors (see module docstring for the definitions); the test
# suite re-measures and checks these numbers are not optimistic.
MAX_ERRORS = {
    "identity": {"float32": (0.0, 0.0), "float64": (0.0, 0.0)},
    "tanh": {"float32": (1.8e-7, 0.0), "float64": (3.4e-16, 0.0)},
    "relu": {"float32": (0.0, 0.0), "float64": (0.0, 0.0)},
    "sigmoid": {"float32": (1.2e-7, 0.0), "float64": (2.3e-16, 0.0)},
    "softplus": {"float32": (1.2e-7, 1.2e-7), "float64": (2.3e-16, 2.3e-16)},
    "gelu": {"float32": (1.8e-7, 1.2e-7), "float64": (3.4e-16, 2.3e-16)},
    "silu": {"float32": (1.2e-7, 1.2e-7), "float64": (2.3e-16, 2.3e-16)},
    "elu": {"float32": (1.2e-7, 0.0), "float64": (2.3e-16, 0.0)},
    "rbf": {"float32": (1.2e-7, 0.0), "float64": (2.3e-16, 0.0)},
}
MAX_DERIV_ERRORS = {
    "identity": {"float32": (0.0, 0.0), "float64": (0.0, 0.0)},
    "tanh": {"float32": (1.8e-7, 0.0), "float64": (3.4e-16, 0.0)},
    "relu": {"float32": (0.0, 0.0), "float64": (0.0, 0.0)},
    "sigmoid": {"float32": (1.2e-7, 0.0), "float64": (2.3e-16, 0.0)},
    "softplus": {"float32": (1.2e-7, 0.0), "float64": (2.3e-16, 0.0)},
    "gelu": {"float32": (1.8e-7, 1.2e-7), "float64": (3.4e-16, 2.3e-16)},
    "silu": {"float32": (1.8e-7, 1.2e-7), "float64": (3.4e-16, 2.3e-16)},
    "elu": {"float32": (1.2e-7, 0.0), "float64": (2.3e-16, 0.0)},
    "rbf": {"float32": (1.2e-7, 0.0), "float64": (2.3e-16, 0.0)},
}


# ---------------------------------------------------------------------------
# bit cast int32 -> float32, int64 -> float64 (vectorises to a no-op)
# ---------------------------------------------------------------------------
@intrinsic
def _int_bits_as_float(typingctx, v):
    if v == types.int32:
        sig, lty = types.float32(types.int32), ir.FloatType()
    elif v == types.int64:
        sig, lty = types.float64(types.int64), ir.DoubleType()
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], lty)

    return sig, codegen


# ---------------------------------------------------------------------------
# polynomial coefficients
# ---------------------------------------------------------------------------
def _taylor_expm1_tail(degree):
    """Coefficients c_j of P with expm1(r) = r + r*r*P(r), P(r) = sum c_j r**j."""
    out, fact = [], 2.0
    for k in range(2, degree + 1):
        out.append(1.0 / fact)
        fact *= k + 1
    return tuple(out)


def _atanh_tail(nterms):
    """Q with 2*atanh(s) = 2 s + s*z*Q(z), z = s*s."""
    return tuple(2.0 / (2 * j + 3) for j in range(nterms))


# g(y) = (1 + 2a) * exp(a*a) * erfc(a), a = K (1+y)/(1-y), as a monomial in y
# (Chebyshev truncation at the given number of terms; _erfcx_poly_coefficients).
_ERFCX_K32 = 3.0
_ERFCX_C32 = (
    1.2530080563677553423, -1.3562106940027360270e-1, -4.7562156927520074100e-2,
    1.2964411434408139391e-1, -1.1927527528224089297e-1, 6.8316567771140853377e-2,
    -2.3763576439495039671e-2, 2.4991168696069475641e-3, 1.8750791237723530031e-3,
    -7.2645367903404842363e-4, -9.2545166869239659643e-5, 7.7310242240768950556e-5,
)
_ERFCX_K64 = 3.5
_ERFCX_C64 = (
    1.2423492448711543912, -1.4000918013761970353e-1, -1.0555596332221669558e-2,
    9.7519095153287059882e-2, -1.1508959816003075410e-1, 8.7983153824036781638e-2,
    -4.8823325830884018773e-2, 1.9099330953271164727e-2, -4.2150198797741863684e-3,
    -3.0226795343332385638e-4, 5.6438426687051022574e-4, -1.2151212091980101384e-4,
    -4.2781739959539996647e-5, 2.4260300984917993603e-5, 2.3273309537791424688e-6,
    -3.8140125844906949918e-6, -4.3092373983166659552e-8, 6.0148238499504253971e-7,
    -8.6115715711137188457e-9, -9.6400425314438302842e-8, 6.6518943823765315883e-10,
    1.3624442778701047257e-8, 6.0403900993429910098e-11, -1.1656687889203665052e-9,
)


def _erfcx_poly_coefficients(K, nterms, nodes=80, dps=50):
    """Regenerate the ``_ERFCX_C*`` tables (needs mpmath; not used at import).

    Chebyshev interpolation of ``g(y) = (1+2a) exp(a*a) erfc(a)``,
    ``a = K (1+y)/(1-y)`` on [-1, 1] (``g(1) = 2/sqrt(pi)``), truncated to
    ``nterms`` terms and converted to monomial coefficients in ``y``.
    Returns (coefficients, largest dropped Chebyshev coefficient).
    """
    import mpmath as mp

    with mp.workdps(dps):
        K = mp.mpf(K)

        def g(y):
            if y == 1:
                return 2 / mp.sqrt(mp.pi)
            a = K * (1 + y) / (1 - y)
            return (1 + 2 * a) * mp.exp(a * a) * mp.erfc(a)

        xs = [mp.cos(mp.pi * (k + mp.mpf(1) / 2) / nodes) for k in range(nodes)]
        vals = [g(y) for y in xs]
        cheb = []
        for j in range(nodes):
            s = mp.fsum(vals[k] * mp.cos(mp.pi * j * (k + mp.mpf(1) / 2) / nodes)
                        for k in range(nodes))
            cheb.append(2 * s / nodes)
        cheb[0] /= 2
        T = [[mp.mpf(1)], [mp.mpf(0), mp.mpf(1)]]
        while len(T) < nterms:
            new = [mp.mpf(0)] + [2 * v for v in T[-1]]
            for i, v in enumerate(T[-2]):
                new[i] -= v
            T.append(new)
        mono = [mp.mpf(0)] * nterms
        for j in range(nterms):
            for i, v in enumerate(T[j]):
                mono[i] += cheb[j] * v
        return tuple(float(m) for m in mono), float(max(abs(c) for c in cheb[nterms:]))


def _make_horner(coeffs, ft, name):
    """njit function p(x) = c0 + x*(c1 + x*(...)) with constants of type ft."""
    ns = {f"c{i}": ft(c) for i, c in enumerate(coeffs)}
    expr = f"c{len(coeffs) - 1}"
    for i in range(len(coeffs) - 2, -1, -1):
        expr = f"c{i} + x * ({expr})"
    exec(f"def {name}(x):\n    return {expr}\n", ns)  # noqa: S102 - generated Horner
    return njit(inline="always", **_JIT)(ns[name])


# ---------------------------------------------------------------------------
# per-dtype kernels
# ---------------------------------------------------------------------------
def _build(ft):
    """Build the scalar kernels for float type ``ft`` (np.float32 / np.float64).

    Each ``<name>_yd(x)`` returns ``(f(x), f'(x))``; loops that do not need the
    derivative simply drop it and LLVM removes the dead code.
    """
    f32 = ft is np.float32
    it = np.int32 if f32 else np.int64
    ZERO, ONE, TWO, HALF = ft(0.0), ft(1.0), ft(2.0), ft(0.5)
    LOG2E = ft(1.4426950408889634)
    if f32:
        # ln2 split so that k*LN2_HI is exact for |k| < 512
        LN2_HI, LN2_LO = ft(0.693145751953125), ft(1.4286068203094173e-06)
        EXP_LO, EXP_HI = ft(-87.0), ft(88.0)  # 2**k stays normal
        BIAS, SHIFT = np.int32(127), np.int32(23)
        expm1_tail = _make_horner(_taylor_expm1_tail(7), ft, "expm1_tail32")
        atanh_tail = _make_horner(_atanh_tail(4), ft, "atanh_tail32")
        erfcx_poly = _make_horner(_ERFCX_C32, ft, "erfcx_poly32")
        ERFC_K = ft(_ERFCX_K32)
    else:
        LN2_HI, LN2_LO = ft(6.93147180369123816490e-01), ft(1.90821492927058770002e-10)
        EXP_LO, EXP_HI = ft(-708.0), ft(709.0)
        BIAS, SHIFT = np.int64(1023), np.int64(52)
        expm1_tail = _make_horner(_taylor_expm1_tail(13), ft, "expm1_tail64")
        atanh_tail = _make_horner(_atanh_tail(9), ft, "atanh_tail64")
        erfcx_poly = _make_horner(_ERFCX_C64, ft, "erfcx_poly64")
        ERFC_K = ft(_ERFCX_K64)
    LN2 = ft(0.6931471805599453)
    SQRT2M1 = ft(0.41421356237309503)
    INV_SQRT2 = ft(0.7071067811865476)
    INV_SQRT_2PI = ft(0.3989422804014327)
    FOUR = ft(4.0)
    BIG = ft(1e30)  # clamp for x in x*(something that tends to 0)
    A_MAX = ft(1e4)  # erfc argument clamp (erfc(1e4) == 0 in both precisions)
    EXP_ARG_MAX = ft(1e10)  # rbf clamp: x*x stays finite

    @njit(inline="always", **_JIT)
    def exp_core(x):
        """(2**k, expm1(r)) with x = k ln2 + r; 2**k := 0 below the range."""
        xc = EXP_HI if x > EXP_HI else x
        xc = EXP_LO if xc < EXP_LO else xc  # NaN survives both selects
        t = xc * LOG2E
        t = t if t == t else ZERO  # keep NaN away from the int conversion
        k = np.int32(t + (HALF if t >= ZERO else -HALF))
        kf = ft(k)
        r = (xc - kf * LN2_HI) - kf * LN2_LO
        p = r + r * r * expm1_tail(r)
        scale = _int_bits_as_float(it((it(k) + BIAS) << SHIFT))
        scale = ZERO if x < EXP_LO else scale
        return scale, p

    @njit(inline="always", **_JIT)
    def identity_yd(x):
        return x, ONE

    @njit(inline="always", **_JIT)
    def relu_yd(x):
        y = ZERO if x <= ZERO else x
        d = ONE if x > ZERO else (ZERO if x <= ZERO else x)
        return y, d

    @njit(inline="always", **_JIT)
    def tanh_yd(x):
        ax = abs(x)
        s, p = exp_core(-TWO * ax)
        sp = s * p
        m = sp + (s - ONE)  # expm1(-2|x|)
        e = s + sp  # exp(-2|x|)
        inv = ONE / (TWO + m)
        t = -m * inv
        y = -t if x < ZERO else t
        d = FOUR * e * inv * inv
        return y, d

    @njit(inline="always", **_JIT)
    def sigmoid_yd(x):
        s, p = exp_core(-abs(x))
        e = s + s * p
        inv = ONE / (ONE + e)
        y = inv if x >= ZERO else e * inv
        return y, e * inv * inv

    @njit(inline="always", **_JIT)
    def softplus_yd(x):
        s, p = exp_core(-abs(x))
        e = s + s * p  # in [0, 1]
        big = e > SQRT2M1
        f = (e - ONE) * HALF if big else e  # log1p(e) = k ln2 + log1p(f)
        kk = ONE if big else ZERO
        sv = f / (TWO + f)
        z = sv * sv
        l1p = kk * LN2 + (TWO * sv + sv * z * atanh_tail(z))
        y = (ZERO if x < ZERO else x) + l1p
        inv = ONE / (ONE + e)
        d = inv if x >= ZERO else e * inv
        return y, d

    @njit(inline="always", **_JIT)
    def gelu_yd(x):
        a = abs(x) * INV_SQRT2
        a = A_MAX if a > A_MAX else a
        s, p = exp_core(-(a * a))
        e = s + s * p  # exp(-x*x/2)
        g = erfcx_poly((a - ERFC_K) / (a + ERFC_K))
        q = HALF * e * g / (ONE + TWO * a)  # Phi(-|x|) = erfc(a)/2
        cdf = q if x < ZERO else ONE - q
        xl = -BIG if x < -BIG else x
        xb = BIG if xl > BIG else xl
        return xl * cdf, cdf + xb * e * INV_SQRT_2PI

    @njit(inline="always", **_JIT)
    def silu_yd(x):
        s, p = exp_core(-abs(x))
        e = s + s * p
        inv = ONE / (ONE + e)
        sg = inv if x >= ZERO else e * inv
        xl = -BIG if x < -BIG else x
        xb = BIG if xl > BIG else xl
        return xl * sg, sg + xb * e * inv * inv

    @njit(inline="always", **_JIT)
    def elu_yd(x):
        xm = ZERO if x > ZERO else x
        s, p = exp_core(xm)
        sp = s * p
        pos = x > ZERO
        y = x if pos else sp + (s - ONE)
        d = ONE if pos else s + sp
        return y, d

    @njit(inline="always", **_JIT)
    def rbf_yd(x):
        xc = EXP_ARG_MAX if x > EXP_ARG_MAX else x
        xc = -EXP_ARG_MAX if xc < -EXP_ARG_MAX else xc
        s, p = exp_core(-(xc * xc))
        e = s + s * p
        return e, -TWO * xc * e

    @njit(inline="always", **_JIT)
    def exp_(x):
        s, p = exp_core(x)
        return s + s * p

    @njit(inline="always", **_JIT)
    def expm1_(x):
        s, p = exp_core(x)
        return s * p + (s - ONE)

    return dict(
        identity=identity_yd, tanh=tanh_yd, relu=relu_yd, sigmoid=sigmoid_yd,
        softplus=softplus_yd, gelu=gelu_yd, silu=silu_yd, elu=elu_yd, rbf=rbf_yd,
        exp=exp_, expm1=expm1_,
    )


_K32 = _build(np.float32)
_K64 = _build(np.float64)


def _make_stub(name):
    def stub(x):
        raise NotImplementedError("only callable from numba-compiled code")

    stub.__name__ = stub.__qualname__ = f"_{name}_yd"

    @overload(stub, inline="always", jit_options=_JIT)
    def _ol(x):
        if isinstance(x, types.Float) and x.bitwidth in (32, 64):
            impl = (_K32 if x.bitwidth == 32 else _K64)[name]

            def body(x):
                return impl(x)

            return body
        return None

    return stub


_identity_yd = _make_stub("identity")
_tanh_yd = _make_stub("tanh")
_relu_yd = _make_stub("relu")
_sigmoid_yd = _make_stub("sigmoid")
_softplus_yd = _make_stub("softplus")
_gelu_yd = _make_stub("gelu")
_silu_yd = _make_stub("silu")
_elu_yd = _make_stub("elu")
_rbf_yd = _make_stub("rbf")
_exp = _make_stub("exp")  # exposed for tests / other kernels (scalar, float32/64)
_expm1 = _make_stub("expm1")


# ---------------------------------------------------------------------------
# array loops
# ---------------------------------------------------------------------------
@njit(inline="always", **_JIT)
def _check(z, off, y, yoff, n, d, doff, want_d):
    if n < 0 or off < 0 or yoff < 0 or off + n > z.shape[0] or yoff + n > y.shape[0]:
        raise IndexError("activation range out of bounds")
    if want_d and (doff < 0 or doff + n > d.shape[0]):
        raise IndexError("activation derivative range out of bounds")


@njit(cache=True, **_JIT)
def act_forward_to(code, z, off, y, yoff, n, d, doff, want_d):
    """Out of place: ``y[yoff:yoff+n] <- f(z[off:off+n])``; ``z`` untouched.

    If ``want_d`` also ``d[doff:doff+n] <- f'(z[off:off+n])`` (``d`` is
    untouched otherwise).  ``y``/``d`` have ``z``'s dtype (float32 or float64).
    ``y`` may be ``z`` itself (then this is :func:`act_forward`).
    Dispatches on ``code`` once, then runs one vectorised loop.
    """
    _check(z, off, y, yoff, n, d, doff, want_d)
    zs = z[off:off + n]
    ys = y[yoff:yoff + n]
    if want_d:
        ds = d[doff:doff + n]
        if code == ACT_TANH:
            for i in range(n):
                ys[i], ds[i] = _tanh_yd(zs[i])
        elif code == ACT_RELU:
            for i in range(n):
                ys[i], ds[i] = _relu_yd(zs[i])
        elif code == ACT_SIGMOID:
            for i in range(n):
                ys[i], ds[i] = _sigmoid_yd(zs[i])
        elif code == ACT_SOFTPLUS:
            for i in range(n):
                ys[i], ds[i] = _softplus_yd(zs[i])
        elif code == ACT_GELU:
            for i in range(n):
                ys[i], ds[i] = _gelu_yd(zs[i])
        elif code == ACT_SILU:
            for i in range(n):
                ys[i], ds[i] = _silu_yd(zs[i])
        elif code == ACT_ELU:
            for i in range(n):
                ys[i], ds[i] = _elu_yd(zs[i])
        elif code == ACT_RBF:
            for i in range(n):
                ys[i], ds[i] = _rbf_yd(zs[i])
        elif code == ACT_IDENTITY:
            for i in range(n):
                ys[i], ds[i] = _identity_yd(zs[i])
        else:
            raise ValueError("unknown activation code")
    else:
        if code == ACT_TANH:
            for i in range(n):
                ys[i] = _tanh_yd(zs[i])[0]
        elif code == ACT_RELU:
            for i in range(n):
                ys[i] = _relu_yd(zs[i])[0]
        elif code == ACT_SIGMOID:
            for i in range(n):
                ys[i] = _sigmoid_yd(zs[i])[0]
        elif code == ACT_SOFTPLUS:
            for i in range(n):
                ys[i] = _softplus_yd(zs[i])[0]
        elif code == ACT_GELU:
            for i in range(n):
                ys[i] = _gelu_yd(zs[i])[0]
        elif code == ACT_SILU:
            for i in range(n):
                ys[i] = _silu_yd(zs[i])[0]
        elif code == ACT_ELU:
            for i in range(n):
                ys[i] = _elu_yd(zs[i])[0]
        elif code == ACT_RBF:
            for i in range(n):
                ys[i] = _rbf_yd(zs[i])[0]
        elif code == ACT_IDENTITY:
            for i in range(n):
                ys[i] = zs[i]
        else:
            raise ValueError("unknown activation code")


@njit(cache=True, **_JIT)
def act_forward(code, z, off, n, d, doff, want_d):
    """In place on a flat 1-D float32 or float64 array ``z``:
    ``z[off:off+n] <- f(z[off:off+n])``.

    If ``want_d`` is True also writes ``f'(z_original)`` into ``d[doff:doff+n]``
    (``d`` has ``z``'s dtype; untouched when ``want_d`` is False).  Dispatches on
    ``code`` once, then runs one vectorised loop.  Identity: ``z`` unchanged,
    ``d`` filled with ones.
    """
    if code == ACT_IDENTITY:
        _check(z, off, z, off, n, d, doff, want_d)
        if want_d:
            ds = d[doff:doff + n]
            for i in range(n):
                ds[i] = 1
        return
    act_forward_to(code, z, off, z, off, n, d, doff, want_d)


# ---------------------------------------------------------------------------
# NumPy reference (float64)
# ---------------------------------------------------------------------------
def _as_f64(x):
    return np.asarray(x, dtype=np.float64)


def reference(code, x):
    """f(x) in float64, with NumPy/SciPy (accurate to ~1 ulp)."""
    from scipy import special

    x = _as_f64(x)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        if code == ACT_IDENTITY:
            return x.copy()
        if code == ACT_TANH:
            return np.tanh(x)
        if code == ACT_RELU:
            return np.where(x > 0, x, np.where(np.isnan(x), x, 0.0))
        if code == ACT_SIGMOID:
            return special.expit(x)
        if code == ACT_SOFTPLUS:
            return np.logaddexp(0.0, x)
        if code == ACT_GELU:
            cdf = special.ndtr(x)
            return np.where(np.isneginf(x), 0.0, x * cdf)
        if code == ACT_SILU:
            return np.where(np.isneginf(x), 0.0, x * special.expit(x))
        if code == ACT_ELU:
            return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)) + 0 * x)
        if code == ACT_RBF:
            return np.exp(-x * x)
    raise ValueError(f"unknown activation code {code}")


def reference_derivative(code, x):
    """f'(x) in float64 (relu' = 0 at x <= 0; identity' = 1)."""
    from scipy import special

    x = _as_f64(x)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        fin = np.where(np.isfinite(x), x, 0.0)  # x * (something -> 0) at +-inf
        nan = np.where(np.isnan(x), np.nan, 0.0)
        if code == ACT_IDENTITY:
            return np.ones_like(x)
        if code == ACT_TANH:
            c = np.cosh(np.minimum(np.abs(x), 400.0))
            return 1.0 / (c * c)
        if code == ACT_RELU:
            return np.where(x > 0, 1.0, 0.0) + nan
        if code == ACT_SIGMOID:
            s = special.expit(x)
            return s * special.expit(-x)
        if code == ACT_SOFTPLUS:
            return special.expit(x)
        if code == ACT_GELU:
            pdf = np.exp(-0.5 * fin * fin) / np.sqrt(2.0 * np.pi)
            return special.ndtr(x) + fin * pdf + nan
        if code == ACT_SILU:
            s = special.expit(x)
            return s + fin * s * special.expit(-x) + nan
        if code == ACT_ELU:
            return np.where(x > 0, 1.0, np.exp(np.minimum(x, 0.0))) + nan
        if code == ACT_RBF:
            return -2.0 * fin * np.exp(-fin * fin) + nan
    raise ValueError(f"unknown activation code {code}")
