# smallchains: `make demo` and `make test` work on a fresh machine (they create .venv).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: demo test test-fast test-pandas2 warmup bench bench-r lint install install-bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.dev-installed: pyproject.toml | $(PY)
	$(PIP) install -q -e ".[dev,plot]"
	touch $@

$(VENV)/.bench-installed: pyproject.toml | $(VENV)/.dev-installed
	$(PIP) install -q -e ".[dev,plot,bench]"
	touch $@

install: $(VENV)/.dev-installed

install-bench: $(VENV)/.bench-installed

## The main jobs: train the seed article's 4->32->16->4 network, side by side with PyTorch and JAX;
## then the pharmacometric demo on the real Theophylline data (fits and plots in demo-output/).
demo: $(VENV)/.bench-installed
	$(VENV)/bin/smallchains warmup training pk
	$(PY) examples/matexp.py
	$(VENV)/bin/smallchains demo theophylline --out demo-output

## The whole suite, notebooks included.
test: $(VENV)/.dev-installed
	$(PY) -m pytest -q
	$(MAKE) test-pandas2

## The data-reading tests again under pandas 2 (the package admits pandas >= 2.0; .venv has pandas 3).
PANDAS2 := .venv-pandas2
$(PANDAS2)/.installed: pyproject.toml
	$(PYTHON) -m venv $(PANDAS2)
	$(PANDAS2)/bin/python -m pip install -q -e ".[dev]" "pandas>=2.0,<3"
	touch $@

test-pandas2: $(PANDAS2)/.installed
	$(PANDAS2)/bin/python -c "import pandas; print('pandas', pandas.__version__)"
	$(PANDAS2)/bin/python -m pytest -q tests/test_pk_data.py tests/test_pk_regimen.py

## The fast tier (a few minutes): everything but notebooks, population fits and fresh-process cache tests.
test-fast: $(VENV)/.dev-installed
	$(PY) -m pytest -q -m "not slow"

## Compile every kernel now (once per install), with a progress display.
warmup: $(VENV)/.dev-installed
	$(VENV)/bin/smallchains warmup

## R and nlme (Debian packages) for the side-by-side pharmacometric references; best effort: the
## scripts that need them say so and skip when they are absent.
bench-r:
	@command -v Rscript >/dev/null 2>&1 && Rscript -e 'library(nlme)' >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" -eq 0 ] && \
	    { apt-get install -y -q r-base-core r-cran-nlme >/dev/null || \
	      { apt-get update -q >/dev/null && apt-get install -y -q r-base-core r-cran-nlme >/dev/null; }; } || \
	    echo "warning: could not install R and nlme (apt-get install -y r-base-core r-cran-nlme); the nlme comparisons will skip"; }

## All benchmarks, peers in the same run.
bench: $(VENV)/.bench-installed bench-r
	$(PY) benchmarks/matexp.py
	$(PY) benchmarks/valgrad.py
	$(PY) benchmarks/latency.py
	$(PY) benchmarks/lenet.py --epochs-timed 3
	$(PY) benchmarks/neural_ode.py
	$(PY) benchmarks/sensitivity_choice.py
	$(PY) benchmarks/pk.py
	$(PY) benchmarks/model_derivatives.py
	$(PY) benchmarks/pk_validation.py
	$(PY) benchmarks/pk_analytic.py
	$(PY) benchmarks/pk_nlme_steady_state.py
	$(PY) benchmarks/pk_vs_nlme.py

lint: $(VENV)/.dev-installed
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m ruff format --check src tests benchmarks examples

clean:
	rm -rf $(VENV) $(PANDAS2) build dist src/*.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
