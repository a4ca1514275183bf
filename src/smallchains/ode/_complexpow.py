"""Accurate complex powers with integer exponents inside compiled code (for complex-step derivatives).

Numba lowers ``z ** n`` for complex ``z`` by the polar form (``cpow``) except for n = 2:
at z = -1.5 + 1e-30j, ``z ** 3`` comes out with an imaginary part of 1.2e-15 instead of
6.75e-30, which turns a complex-step derivative into garbage wherever a state is negative
(the spiral's ``u ** 3`` is the textbook case).  CPython uses repeated multiplication for
integer exponents; this module registers a lowering of complex ``**`` that does the same
when the exponent is real and integral with magnitude <= 64, and defers to Numba's own
otherwise.  Registered later for the same signature, it replaces Numba's in this process
(results only become more accurate: exact products instead of exp/log).
"""

from __future__ import annotations

import operator

from numba.core import types
from numba.core.imputils import lower_builtin
from numba.cpython.numbers import complex_power_impl as _numba_complex_power


def _is_small_int(b):
    return b.imag == 0.0 and abs(b.real) <= 64.0 and b.real == float(int(b.real))


def _int_power(a, b):
    k = int(b.real)
    n = -k if k < 0 else k
    r = complex(1.0, 0.0)
    x = a
    while n:
        if n & 1:
            r = r * x
        x = x * x
        n >>= 1
    return r if k >= 0 else 1.0 / r


@lower_builtin(operator.pow, types.Complex, types.Complex)
@lower_builtin(operator.ipow, types.Complex, types.Complex)
@lower_builtin(pow, types.Complex, types.Complex)
def complex_power(context, builder, sig, args):
    ty = sig.args[0]
    flag = context.compile_internal(builder, _is_small_int, types.boolean(ty), [args[1]])
    out = builder.alloca(context.get_value_type(sig.return_type))
    with builder.if_else(flag) as (then, otherwise):
        with then:
            builder.store(context.compile_internal(builder, _int_power, sig, args), out)
        with otherwise:
            builder.store(_numba_complex_power(context, builder, sig, args), out)
    return builder.load(out)
