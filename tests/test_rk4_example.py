"""examples/rk4_adjoint.py: the discrete RK4 adjoint built on ``smallchains.kernels`` is the
exact gradient (against central finite differences), and solve + adjoint allocate nothing."""

from __future__ import annotations

import os
import sys

import numba
import numpy as np
import pytest
from numba.core.runtime import _nrt_python, rtsys

_EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")
if _EXAMPLES not in sys.path:
    sys.path.insert(0, _EXAMPLES)

import rk4_adjoint as ex  # noqa: E402


@pytest.fixture(scope="module")
def problem():
    prob = ex.make_problem(t_end=1.0, nsteps=60, nsave=6, seed=3)
    return prob, ex.make_buffers(prob["chain"], prob["nsteps"])


def test_adjoint_matches_central_differences(problem):
    prob, buf = problem
    loss, gp, gu0 = ex.value_and_gradient(prob, buf)
    assert np.isfinite(loss) and loss > 0
    adj = np.concatenate([gp, gu0])
    fd = ex.finite_difference_gradient(prob, buf, eps=1e-6)
    rel = np.linalg.norm(adj - fd) / np.linalg.norm(fd)
    assert rel < 1e-6, rel
    # componentwise too, relative to the gradient's scale
    assert np.max(np.abs(adj - fd)) < 1e-6 * np.max(np.abs(fd))
    # the loss reported with the gradient is the loss of the forward solve alone
    b = buf
    again = ex.loss_only(
        prob["chain"].program,
        prob["p"],
        prob["u0"],
        prob["h"],
        prob["data"],
        prob["save_every"],
        b["U"],
        b["stages"],
        b["k"],
        b["work"],
    )
    assert again == loss


def test_adjoint_is_repeatable_and_leaves_inputs(problem):
    prob, buf = problem
    p0, u00 = prob["p"].copy(), prob["u0"].copy()
    l1, gp1, gu1 = ex.value_and_gradient(prob, buf)
    l2, gp2, gu2 = ex.value_and_gradient(prob, buf)
    assert l1 == l2 and np.array_equal(gp1, gp2) and np.array_equal(gu1, gu2)
    assert np.array_equal(prob["p"], p0) and np.array_equal(prob["u0"], u00)


def test_nonfinite_state_reports_status_1(problem):
    prob, buf = problem
    u0 = np.array([np.nan, 0.0])
    with pytest.raises(FloatingPointError):
        ex.value_and_gradient(prob, buf, u0=u0)


@numba.njit
def _unbox_only(*args):
    return 0


@numba.njit
def _allocates(n):
    return np.zeros(n).sum()


def test_solve_and_adjoint_allocate_nothing(problem):
    prob, buf = problem
    b = buf
    args = (
        prob["chain"].program,
        prob["p"],
        prob["u0"],
        prob["h"],
        prob["data"],
        prob["save_every"],
        b["gp"],
        b["gu0"],
        b["U"],
        b["stages"],
        b["k"],
        b["lam"],
        b["kbar"],
        b["xbar"],
        b["work"],
    )

    def count(fn, *a):
        fn(*a)  # warm: compiled, caches loaded
        before = rtsys.get_allocation_stats().alloc
        fn(*a)
        return rtsys.get_allocation_stats().alloc - before

    was = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    try:
        assert count(_allocates, 10) == 1  # the counter is live
        # Calling compiled code from Python wraps each array argument in an NRT MemInfo;
        # that boundary cost is measured with a function that does nothing and subtracted.
        boundary = count(_unbox_only, *args)
        assert count(ex.loss_and_grad, *args) - boundary == 0
    finally:
        if not was:
            _nrt_python.memsys_disable_stats()


def test_docs_excerpts_match_the_example():
    """Every code block marked as an excerpt of the example in docs/kernels.md is in its source."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    doc_path = os.path.join(root, "docs", "kernels.md")
    if not os.path.exists(doc_path):
        pytest.skip("docs/kernels.md not present")
    with open(doc_path, encoding="utf-8") as fh:
        doc = fh.read()
    with open(os.path.join(_EXAMPLES, "rk4_adjoint.py"), encoding="utf-8") as fh:
        source = fh.read()
    marker = "<!-- excerpt: examples/rk4_adjoint.py -->\n```python\n"
    blocks = [part.split("```", 1)[0] for part in doc.split(marker)[1:]]
    assert blocks, "no excerpt found in docs/kernels.md"
    for block in blocks:
        assert block in source, f"docs/kernels.md excerpt is out of date:\n{block}"
