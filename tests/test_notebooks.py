"""Execute every tutorial in notebooks/ (the test fails if any cell raises).

Each notebook runs in a fresh kernel of *this* interpreter (``sys.executable``, so the
venv's smallchains is the one imported), with the working directory set to notebooks/
and ``MPLBACKEND=Agg``.  A new ``notebooks/*.ipynb`` is picked up automatically.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

pytestmark = pytest.mark.slow  # (make test-fast skips these; make test and CI run them)

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds; generous, for a cold Numba cache


def _kernel_manager(tmp_path: Path) -> KernelManager:
    """A kernel manager whose only "python3" kernel is ``sys.executable -m ipykernel_launcher``."""
    spec_dir = tmp_path / "kernels" / "python3"
    spec_dir.parent.mkdir(parents=True)  # write_kernel_spec creates spec_dir itself
    from ipykernel.kernelspec import write_kernel_spec

    write_kernel_spec(
        spec_dir,
        overrides={
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "env": {"MPLBACKEND": "Agg"},
        },
    )
    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")], ensure_native_kernel=False)
    assert ksm.get_kernel_spec("python3").argv[0] == sys.executable
    return KernelManager(kernel_name="python3", kernel_spec_manager=ksm)


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    # one extra cell (in memory only) reports which interpreter and directory the kernel used
    nb.cells.append(nbformat.v4.new_code_cell("import os, sys\nprint(sys.executable)\nprint(os.getcwd())"))
    client = nbclient.NotebookClient(
        nb,
        km=_kernel_manager(tmp_path),
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"{path.name}: a cell raised\n{exc}", pytrace=False)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    # (the two lines may arrive as one stream output or as two)
    executable, cwd = "".join(o.get("text", "") for o in nb.cells[-1].outputs).split()
    assert os.path.samefile(executable, sys.executable)
    assert os.path.samefile(cwd, NOTEBOOK_DIR)


def test_notebooks_are_committed_executed_in_order():
    """The house rule: notebooks are committed with their outputs (they render on a repository
    page), run top to bottom in one kernel, without an error output."""
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        counts = [c.get("execution_count") for c in code]
        assert counts == list(range(1, len(code) + 1)), (
            f"{path.name}: execute it top to bottom in a fresh kernel and save it with its outputs "
            f"(execution counts {counts})"
        )
        assert any(c.get("outputs") for c in code), f"{path.name}: saved without outputs"
        errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path.name}: saved with an error output"
