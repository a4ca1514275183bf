"""Vectorisable activation functions (and derivatives) for Numba ``@njit`` code.

Why this module exists
----------------------
Inside ``@njit`` code a scalar ``np.tanh`` / ``math.exp`` is a libm call per
element; with this numba/llvmlite there is no SVML, so such a call blocks LLVM's
loop vectoriser.  Every activation here is therefore written branch-free with
``+ - * /``, ``abs``, selects and integer/bit operations only -- no libm call.
``exp`` is our own: ``x = k*ln2 + r`` (Cody-Waite, ``|r| <= ln2/2``),
``expm1(r)`` by its Taylor polynomial (degree 7 in float32, 13 in float64;
<= 1 ulp measured), and ``2**k`` built by shifting ``k + bias`` into the
exponent field and bit-casting (:func:`_int_bits_as_float`, an intrinsic).

Three more tiny intrinsics keep LLVM honest: :func:`_sel` (``a if c else b``
as one ``select`` -- no control flow, so kernels inline into one basic block),
and :func:`_cody_waite` / :func:`_scale_expm1`, which emit their few float ops
with the ``contract`` flag only.  Numba's fast-math pass skips instructions
that already carry flags, so those are not reassociated: with ``reassoc``,
LLVM otherwise folds ``ln2_hi + ln2_lo`` (float64 exp then loses 100 ulp near
exp(-700)) and turns ``s*p + (s-1)`` into ``exp - 1`` (tanh(1e-30) gave 0).

Float32 stays float32: every kernel exists twice, built by :func:`_build` with
constants of the right NumPy type; a stub per activation is overloaded on the
argument type (``numba.extending.overload``) and passed as a first-class
function into one loop per (activation, dtype, in place?, derivative?).  The
float32 loops have no ``fpext`` and vectorise as ``<8 x float>`` (LLVM picks
256-bit vectors on this AVX-512 host; ``<4 x double>`` for float64).  Timings
on 1e6 elements: tanh float32 ~0.65 ns/element in place (a plain ``@njit``
loop with ``np.tanh`` takes ~9.5 ns; NumPy's own SIMD ``np.tanh`` ~0.3 ns).

Formulas (``e`` = our exp; all selects NaN-preserving):

* tanh, float32: Eigen's clamped [13/6] rational approximation, derivative
            ``1 - t*t`` (twice as fast as the exp route below: 0.44 against 0.89
            ns/element with the derivative; 2.8e-7 absolute error, 5.5e-7 for
            the derivative, whose tails are absolutely but not relatively accurate).
* tanh, float64: ``m = expm1(-2|x|)``, ``tanh = -m/(2+m)`` (sign restored),
            ``tanh' = 4 e/(1+e)**2`` with ``e = exp(-2|x|)`` (``1 - t*t`` for
            ``|x| < 1/2``) -- no cancellation in the tails, and relatively
            accurate near 0.
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

Accuracy (measured; ``MAX_ERRORS`` / ``MAX_DERIV_ERRORS``)
-----------------------------------------------------------
Measured on this machine against the float64 NumPy/SciPy :func:`reference`
over 2,000,001 evenly spaced points in [-20, 20], 8e6 random points (half in
[-4, 4]) and special points (0, tiny, denormals, +-1e-30..30 log-spaced,
branch points).  ``abs_err`` is ``max |f - ref|`` over points with
``|ref| <= 1``; ``rel_err`` is ``max |f - ref| / |ref|`` over points with
``|ref| > 1`` (0.0 when there are none).  Dict values are the maxima rounded
*up* to two digits; ``tests/test_activations.py`` re-measures and fails if a
number here is optimistic.  Both code paths (with and without derivative,
which LLVM optimises differently; results may differ by an ulp) are included.
Reached: float32 <= 2.3e-7 absolute (gelu'; <= 4 ulp of 1; tanh 2.8e-7 and
tanh' 5.5e-7 with the fast rational form) and
<= 1.8e-7 relative; float64 <= 5.6e-16 absolute (tanh'; function values
<= 3.4e-16) and <= 4.5e-16 relative -- far inside the 1e-14 goal.  Tiny
results are relatively accurate too (<= ~4 ulp: tanh, sigmoid, softplus,
silu, elu in both precisions, rbf and gelu in float64); float32 rbf and gelu
tails are not (the rounding of ``x*x`` inside ``exp(-x*x)`` gives ~4e-6
relative error at rbf(4) and ~1.4e-5 at gelu(-10); absolute errors there are
< 1e-12).

Numba options: every kernel is compiled with ``fastmath=FASTMATH_FLAGS`` (no
``nnan``/``ninf`` so NaN tests survive), ``boundscheck=False`` and
``error_model='numpy'`` (no ZeroDivisionError branch in the loop, which would
block vectorisation); ``act_forward`` / ``act_forward_to`` also ``cache=True``.
Cold compilation of both dtypes takes ~12 s; later processes load the cache.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from ._jit import CACHE as _CACHE
from ._jit import FASTMATH_FLAGS as _POLICY_FLAGS
from ._jit import kernel

FASTMATH_FLAGS = set(_POLICY_FLAGS)  # the package policy (empty in strict mode), see _jit

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
    "identity",
    "tanh",
    "relu",
    "sigmoid",
    "softplus",
    "gelu",
    "silu",
    "elu",
    "rbf",
)

_JIT = dict(fastmath=FASTMATH_FLAGS or False, error_model="numpy", boundscheck=False, _nrt=False)

# Measured maximum errors (see module docstring for the definitions); the test
# suite re-measures and checks these numbers are not optimistic.
MAX_ERRORS = {
    "identity": {"float32": (0.0, 0.0), "float64": (0.0, 0.0)},
    "tanh": {"float32": (2.8e-07, 0.0), "float64": (3.4e-16, 0.0)},
    "relu": {"float32": (0.0, 0.0), "float64": (0.0, 0.0)},
    "sigmoid": {"float32": (9.0e-08, 0.0), "float64": (2.3e-16, 0.0)},
    "softplus": {"float32": (1.4e-07, 1.7e-07), "float64": (2.3e-16, 4.4e-16)},
    "gelu": {"float32": (1.1e-07, 1.2e-07), "float64": (3.4e-16, 4.4e-16)},
    "silu": {"float32": (1.3e-07, 1.6e-07), "float64": (3.4e-16, 4.5e-16)},
    "elu": {"float32": (4.3e-08, 0.0), "float64": (1.2e-16, 0.0)},
    "rbf": {"float32": (6.1e-08, 0.0), "float64": (1.2e-16, 0.0)},
}
MAX_DERIV_ERRORS = {
    "identity": {"float32": (0.0, 0.0), "float64": (0.0, 0.0)},
    "tanh": {"float32": (5.5e-07, 0.0), "float64": (5.6e-16, 0.0)},
    "relu": {"float32": (0.0, 0.0), "float64": (0.0, 0.0)},
    "sigmoid": {"float32": (5.5e-08, 0.0), "float64": (1.2e-16, 0.0)},
    "softplus": {"float32": (9.0e-08, 0.0), "float64": (2.3e-16, 0.0)},
    "gelu": {"float32": (2.2e-07, 1.4e-07), "float64": (3.4e-16, 4.3e-16)},
    "silu": {"float32": (1.5e-07, 1.8e-07), "float64": (4.5e-16, 4.5e-16)},
    "elu": {"float32": (5.2e-08, 0.0), "float64": (1.2e-16, 0.0)},
    "rbf": {"float32": (1.2e-07, 0.0), "float64": (2.3e-16, 0.0)},
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


@intrinsic
def _sel(typingctx, cond, a, b):
    """``a if cond else b`` as one LLVM ``select`` (no control flow in numba IR,
    so inlined kernels stay a single basic block); ``a``, ``b`` same float type."""
    if not isinstance(cond, types.Boolean) or a != b or not isinstance(a, types.Float):
        return None

    def codegen(context, builder, signature, args):
        return builder.select(args[0], args[1], args[2])

    return a(cond, a, b), codegen


@intrinsic
def _cody_waite(typingctx, x, k, hi, lo):
    """``(x - k*hi) - k*lo`` with ``contract`` as the only fast-math flag.

    Numba's fastmath pass only flags instructions that have none, so these
    four stay non-reassociable.  With ``reassoc`` LLVM folds the pair into
    ``x - k*(hi + lo)`` (one rounded ln2) and float64 exp loses ~0.1 ulp per
    unit of ``|k|`` (100 ulp near exp(-700); measured before this fix).
    """
    if not (isinstance(x, types.Float) and x == k == hi == lo):
        return None

    def codegen(context, builder, signature, args):
        xv, kv, hv, lv = args
        fl = ("contract",)
        t = builder.fsub(xv, builder.fmul(kv, hv, flags=fl), flags=fl)
        return builder.fsub(t, builder.fmul(kv, lv, flags=fl), flags=fl)

    return x(x, k, hi, lo), codegen


@intrinsic
def _scale_expm1(typingctx, s, p):
    """``s*p + (s - 1)`` (= ``2**k * expm1(r) + 2**k - 1``), not reassociable.

    With ``reassoc`` LLVM rewrites it as ``(s + s*p) - 1``, i.e. ``exp - 1``
    (CSE with the exp computed next to it), which loses all relative accuracy
    of expm1 near 0 (tanh(1e-30) came out as 0).
    """
    if not (isinstance(s, types.Float) and s == p):
        return None

    def codegen(context, builder, signature, args):
        sv, pv = args
        fl = ("contract",)
        one = context.get_constant(s, 1.0)
        return builder.fadd(builder.fmul(sv, pv, flags=fl), builder.fsub(sv, one, flags=fl), flags=fl)

    return s(s, p), codegen


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
    1.2530080563677553423,
    -1.3562106940027360270e-1,
    -4.7562156927520074100e-2,
    1.2964411434408139391e-1,
    -1.1927527528224089297e-1,
    6.8316567771140853377e-2,
    -2.3763576439495039671e-2,
    2.4991168696069475641e-3,
    1.8750791237723530031e-3,
    -7.2645367903404842363e-4,
    -9.2545166869239659643e-5,
    7.7310242240768950556e-5,
)
_ERFCX_K64 = 3.5
_ERFCX_C64 = (
    1.2423492448711543912,
    -1.4000918013761970353e-1,
    -1.0555596332221669558e-2,
    9.7519095153287059882e-2,
    -1.1508959816003075410e-1,
    8.7983153824036781638e-2,
    -4.8823325830884018773e-2,
    1.9099330953271164727e-2,
    -4.2150198797741863684e-3,
    -3.0226795343332385638e-4,
    5.6438426687051022574e-4,
    -1.2151212091980101384e-4,
    -4.2781739959539996647e-5,
    2.4260300984917993603e-5,
    2.3273309537791424688e-6,
    -3.8140125844906949918e-6,
    -4.3092373983166659552e-8,
    6.0148238499504253971e-7,
    -8.6115715711137188457e-9,
    -9.6400425314438302842e-8,
    6.6518943823765315883e-10,
    1.3624442778701047257e-8,
    6.0403900993429910098e-11,
    -1.1656687889203665052e-9,
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
            s = mp.fsum(vals[k] * mp.cos(mp.pi * j * (k + mp.mpf(1) / 2) / nodes) for k in range(nodes))
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
    return njit(**_JIT)(ns[name])


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

    @njit(**_JIT)
    def exp_core(x):
        """(2**k, expm1(r)) with x = k ln2 + r; 2**k := 0 below the range."""
        xc = _sel(x > EXP_HI, EXP_HI, x)
        xc = _sel(xc < EXP_LO, EXP_LO, xc)  # NaN survives both selects
        t = xc * LOG2E
        t = _sel(t == t, t, ZERO)  # keep NaN away from the int conversion
        k = np.int32(t + _sel(t >= ZERO, HALF, -HALF))
        kf = ft(k)
        r = _cody_waite(xc, kf, LN2_HI, LN2_LO)
        p = r + r * r * expm1_tail(r)
        scale = _int_bits_as_float(it((it(k) + BIAS) << SHIFT))
        scale = _sel(x < EXP_LO, ZERO, scale)
        return scale, p

    @njit(inline="always", **_JIT)
    def identity_yd(x):
        return x, ONE

    @njit(inline="always", **_JIT)
    def relu_yd(x):
        y = _sel(x <= ZERO, ZERO, x)
        d = _sel(x > ZERO, ONE, _sel(x <= ZERO, ZERO, x))
        return y, d

    # float32 tanh: Eigen's clamped [13/6] rational approximation.  One division
    # and ten FMAs instead of exp + division: 0.44 against 0.89 ns/element with the
    # derivative (measured), which matters because tanh is ~30% of a small MLP's
    # training time.  Derivative 1 - t*t (training does not need relative accuracy
    # of tanh' in the far tails; its absolute error stays below 6e-7).
    TA = [
        ft(v)
        for v in (
            4.89352455891786e-03,
            6.37261928875436e-04,
            1.48572235717979e-05,
            5.12229709037114e-08,
            -8.60467152213735e-11,
            2.00018790482477e-13,
            -2.76076847742355e-16,
        )
    ]
    TB = [ft(v) for v in (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)]
    ta1, ta3, ta5, ta7, ta9, ta11, ta13 = TA
    tb0, tb2, tb4, tb6 = TB
    TCLAMP = ft(7.90531110763549805)

    @njit(inline="always", **_JIT)
    def tanh_rational_yd(x):
        xc = _sel(x > TCLAMP, TCLAMP, x)
        xc = _sel(xc < -TCLAMP, -TCLAMP, xc)
        x2 = xc * xc
        num = xc * (ta1 + x2 * (ta3 + x2 * (ta5 + x2 * (ta7 + x2 * (ta9 + x2 * (ta11 + x2 * ta13))))))
        den = tb0 + x2 * (tb2 + x2 * (tb4 + x2 * tb6))
        t = num / den
        sat = abs(x) >= TCLAMP  # saturated: exactly +-1, derivative 0 (NaN is not saturated)
        t = _sel(sat, _sel(x > ZERO, ONE, -ONE), t)
        return t, _sel(sat, ZERO, ONE - t * t)

    @njit(inline="always", **_JIT)
    def tanh_yd(x):
        s, p = exp_core(-TWO * abs(x))
        m = _scale_expm1(s, p)  # expm1(-2|x|)
        e = s + s * p  # exp(-2|x|)
        inv = ONE / (TWO + m)
        t = -m * inv
        # tanh' = 1 - t*t is exact-ish for small |x|, 4e/(1+e)**2 in the tails
        d = _sel(abs(x) < HALF, ONE - t * t, FOUR * e * inv * inv)
        return _sel(x < ZERO, -t, t), d

    @njit(inline="always", **_JIT)
    def sigmoid_yd(x):
        s, p = exp_core(-abs(x))
        e = s + s * p
        inv = ONE / (ONE + e)
        return _sel(x >= ZERO, inv, e * inv), e * inv * inv

    @njit(inline="always", **_JIT)
    def softplus_yd(x):
        s, p = exp_core(-abs(x))
        e = s + s * p  # in [0, 1]
        big = e > SQRT2M1
        f = _sel(big, (e - ONE) * HALF, e)  # log1p(e) = kk ln2 + log1p(f)
        kk = _sel(big, ONE, ZERO)
        sv = f / (TWO + f)
        z = sv * sv
        l1p = kk * LN2 + (TWO * sv + sv * z * atanh_tail(z))
        y = _sel(x < ZERO, ZERO, x) + l1p
        inv = ONE / (ONE + e)
        return y, _sel(x >= ZERO, inv, e * inv)

    @njit(inline="always", **_JIT)
    def gelu_yd(x):
        a = abs(x) * INV_SQRT2
        a = _sel(a > A_MAX, A_MAX, a)
        s, p = exp_core(-(a * a))
        e = s + s * p  # exp(-x*x/2)
        g = erfcx_poly((a - ERFC_K) / (a + ERFC_K))
        q = HALF * e * g / (ONE + TWO * a)  # Phi(-|x|) = erfc(a)/2
        cdf = _sel(x < ZERO, q, ONE - q)
        xl = _sel(x < -BIG, -BIG, x)
        xb = _sel(xl > BIG, BIG, xl)
        return xl * cdf, cdf + xb * e * INV_SQRT_2PI

    @njit(inline="always", **_JIT)
    def silu_yd(x):
        s, p = exp_core(-abs(x))
        e = s + s * p
        inv = ONE / (ONE + e)
        sg = _sel(x >= ZERO, inv, e * inv)
        xl = _sel(x < -BIG, -BIG, x)
        xb = _sel(xl > BIG, BIG, xl)
        return xl * sg, sg + xb * e * inv * inv

    @njit(inline="always", **_JIT)
    def elu_yd(x):
        s, p = exp_core(_sel(x > ZERO, ZERO, x))
        pos = x > ZERO
        return _sel(pos, x, _scale_expm1(s, p)), _sel(pos, ONE, s + s * p)

    @njit(inline="always", **_JIT)
    def rbf_yd(x):
        xc = _sel(x > EXP_ARG_MAX, EXP_ARG_MAX, x)
        xc = _sel(xc < -EXP_ARG_MAX, -EXP_ARG_MAX, xc)
        s, p = exp_core(-(xc * xc))
        e = s + s * p
        return e, -TWO * xc * e

    @njit(**_JIT)
    def exp_(x):
        s, p = exp_core(x)
        return s + s * p

    @njit(**_JIT)
    def expm1_(x):
        s, p = exp_core(x)
        return _scale_expm1(s, p)

    return dict(
        identity=identity_yd,
        tanh=tanh_rational_yd if f32 else tanh_yd,
        relu=relu_yd,
        sigmoid=sigmoid_yd,
        softplus=softplus_yd,
        gelu=gelu_yd,
        silu=silu_yd,
        elu=elu_yd,
        rbf=rbf_yd,
        exp=exp_,
        expm1=expm1_,
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


# One loop per (kernel, in place or not, derivative or not).  The kernel stub
# is passed as a first-class function, so each loop is compiled -- with the
# kernel inlined -- per activation and dtype.  In-place loops are separate:
# with ``y is z`` LLVM's runtime alias check fails and the generic loop would
# run its scalar fallback (measured: ~7x slower).
@njit(**_JIT)
def _map_inplace(f, zs):
    for i in range(zs.shape[0]):
        zs[i] = f(zs[i])[0]


@njit(**_JIT)
def _map_inplace_d(f, zs, ds):
    for i in range(zs.shape[0]):
        zs[i], ds[i] = f(zs[i])


@njit(**_JIT)
def _map_to(f, zs, ys):
    for i in range(zs.shape[0]):
        ys[i] = f(zs[i])[0]


@njit(**_JIT)
def _map_to_d(f, zs, ys, ds):
    for i in range(zs.shape[0]):
        ys[i], ds[i] = f(zs[i])


@njit(inline="always", **_JIT)
def _apply(f, zs, ys, ds, want_d, inplace):
    if inplace:
        if want_d:
            _map_inplace_d(f, zs, ds)
        else:
            _map_inplace(f, zs)
    else:
        if want_d:
            _map_to_d(f, zs, ys, ds)
        else:
            _map_to(f, zs, ys)


@njit(cache=_CACHE, **_JIT)
def act_forward_to(code, z, off, y, yoff, n, d, doff, want_d):
    """Out of place: ``y[yoff:yoff+n] <- f(z[off:off+n])``; ``z`` untouched.

    If ``want_d`` also ``d[doff:doff+n] <- f'(z[off:off+n])`` (``d`` is
    untouched otherwise).  ``y``/``d`` have ``z``'s dtype (float32 or float64).
    ``y`` may be the very same range as ``z`` (that is :func:`act_forward`);
    other overlaps behave like a sequential element loop.  Ranges are checked
    (IndexError).  Dispatches on ``code`` once, then runs one vectorised loop.
    """
    _check(z, off, y, yoff, n, d, doff, want_d)
    zs = z[off : off + n]
    ys = y[yoff : yoff + n]
    ds = d[doff : doff + n]
    same = zs.ctypes.data == ys.ctypes.data
    if code == ACT_IDENTITY:
        if want_d:
            for i in range(n):
                ds[i] = 1
        if not same:
            for i in range(n):
                ys[i] = zs[i]
    elif code == ACT_TANH:
        _apply(_tanh_yd, zs, ys, ds, want_d, same)
    elif code == ACT_RELU:
        _apply(_relu_yd, zs, ys, ds, want_d, same)
    elif code == ACT_SIGMOID:
        _apply(_sigmoid_yd, zs, ys, ds, want_d, same)
    elif code == ACT_SOFTPLUS:
        _apply(_softplus_yd, zs, ys, ds, want_d, same)
    elif code == ACT_GELU:
        _apply(_gelu_yd, zs, ys, ds, want_d, same)
    elif code == ACT_SILU:
        _apply(_silu_yd, zs, ys, ds, want_d, same)
    elif code == ACT_ELU:
        _apply(_elu_yd, zs, ys, ds, want_d, same)
    elif code == ACT_RBF:
        _apply(_rbf_yd, zs, ys, ds, want_d, same)
    else:
        raise ValueError("unknown activation code")


@njit(cache=_CACHE, **_JIT)
def act_inplace(code, zs, ds, want_d):
    """``zs <- f(zs)`` (whole 1-D array), ``ds <- f'(zs_original)`` when ``want_d``.

    No range checks and no ``raise``: for compiled callers that own their
    buffers (the engine; the checks of :func:`act_forward` cost ~13 ns per
    call, a quarter of the time of 50 float64 tanh values).  ``ds`` must be at
    least as long as ``zs`` when ``want_d``.
    """
    if code == ACT_IDENTITY:
        if want_d:
            for i in range(zs.shape[0]):
                ds[i] = 1
    elif code == ACT_TANH:
        _apply(_tanh_yd, zs, zs, ds, want_d, True)
    elif code == ACT_RELU:
        _apply(_relu_yd, zs, zs, ds, want_d, True)
    elif code == ACT_SIGMOID:
        _apply(_sigmoid_yd, zs, zs, ds, want_d, True)
    elif code == ACT_SOFTPLUS:
        _apply(_softplus_yd, zs, zs, ds, want_d, True)
    elif code == ACT_GELU:
        _apply(_gelu_yd, zs, zs, ds, want_d, True)
    elif code == ACT_SILU:
        _apply(_silu_yd, zs, zs, ds, want_d, True)
    elif code == ACT_ELU:
        _apply(_elu_yd, zs, zs, ds, want_d, True)
    elif code == ACT_RBF:
        _apply(_rbf_yd, zs, zs, ds, want_d, True)


# One kernel per activation, in place on a whole 1-D array as :func:`act_inplace`, so that the
# interpreter can call them through addresses and compile only the activations a chain uses.
# Each returns 0 (the interpreter's call signature returns an int64).


@kernel
def tanh_inplace(zs, ds, want_d):
    _apply(_tanh_yd, zs, zs, ds, want_d, True)
    return 0


@kernel
def relu_inplace(zs, ds, want_d):
    _apply(_relu_yd, zs, zs, ds, want_d, True)
    return 0


@kernel
def sigmoid_inplace(zs, ds, want_d):
    _apply(_sigmoid_yd, zs, zs, ds, want_d, True)
    return 0


@kernel
def softplus_inplace(zs, ds, want_d):
    _apply(_softplus_yd, zs, zs, ds, want_d, True)
    return 0


@kernel
def gelu_inplace(zs, ds, want_d):
    _apply(_gelu_yd, zs, zs, ds, want_d, True)
    return 0


@kernel
def silu_inplace(zs, ds, want_d):
    _apply(_silu_yd, zs, zs, ds, want_d, True)
    return 0


@kernel
def elu_inplace(zs, ds, want_d):
    _apply(_elu_yd, zs, zs, ds, want_d, True)
    return 0


@kernel
def rbf_inplace(zs, ds, want_d):
    _apply(_rbf_yd, zs, zs, ds, want_d, True)
    return 0


#: the in-place kernel of each activation code (identity has none: the interpreter skips it)
INPLACE = (
    None,
    tanh_inplace,
    relu_inplace,
    sigmoid_inplace,
    softplus_inplace,
    gelu_inplace,
    silu_inplace,
    elu_inplace,
    rbf_inplace,
)


@njit(cache=_CACHE, **_JIT)
def act_forward(code, z, off, n, d, doff, want_d):
    """In place on a flat 1-D float32 or float64 array ``z``:
    ``z[off:off+n] <- f(z[off:off+n])``.

    If ``want_d`` is True also writes the derivative ``f'(z_original)`` into
    ``d[doff:doff+n]`` (``d`` has ``z``'s dtype; untouched when ``want_d`` is
    False).  Dispatches on ``code`` once, then runs one vectorised loop.
    Identity: ``z`` unchanged, ``d`` filled with ones.
    """
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
            return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))
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
