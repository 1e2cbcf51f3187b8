# Two commands on a fresh machine:  `make demo` (main job)  and  `make test` (tests).
# Each one creates .venv and installs what it needs on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
PRESET ?= offline
OUT    ?= results/$(PRESET)

.PHONY: regime regime-docs venv venv-all data demo typecheck test test-all test-fast test-count bench bench-quick bench-docs bench-train grid reproduce reproduce-docs docs clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# The documentation site's tools (the `docs` extra: Sphinx, myst-nb, sphinx-book-theme), added
# to .venv: the API reference imports the package, so the site builds where the tests run.
$(VENV)/.docs-installed: $(VENV)/.installed setup.cfg
	$(PY) -m pip install -q -e '.[docs]'
	touch $@

# The extras (torch, imagecorruptions, psutil) live in their own environment, so that
# `make test` in .venv stays exactly the default suite that CI runs.
VENV_ALL ?= .venv-all
$(VENV_ALL)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV_ALL)
	$(VENV_ALL)/bin/python -m pip install -q --upgrade pip
	$(VENV_ALL)/bin/python -m pip install -q -e '.[test,bench]'
	touch $@

venv-all: $(VENV_ALL)/.installed

# Fashion-MNIST from Debian's dataset-fashion-mnist package (no network at run time).
data:
	@if [ ! -f $(FMNIST) ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)); \
	  else \
	    echo "Fashion-MNIST is missing: run 'sudo apt-get install -y dataset-fashion-mnist' (Debian/Ubuntu)"; exit 1; \
	  fi; \
	fi

demo: venv data
	$(PY) -m rws_jax run --preset $(PRESET) --out $(OUT)

# The reproduction study (sized for <= 2.5 h on 2 CPU cores, resumable): results/reproduce/report.md
reproduce: venv data
	$(PY) -m rws_jax reproduce --out results/reproduce

# ... committed: docs/reproduce/ (reports, figures, metrics, configs), the released model with its 8-bit
# signatures (docs/reproduce/release/), README's headline table and the tables of
# docs/results/reproduction.md (with the verdicts of the earlier designs, docs/reproduce_*, beside them)
# and docs/results/autopatching.md
reproduce-docs: reproduce
	$(PY) -m rws_jax report --preset reproduce --out results/reproduce --export docs/reproduce
	$(PY) -m rws_jax release export --run results/reproduce/vgg16_seed0 --out docs/reproduce/release \
	  --splice README.md
	$(PY) -m rws_jax report --preset reproduce --out docs/reproduce --summary --splice README.md \
	  --splice docs/results/reproduction.md --splice docs/results/autopatching.md

# The regime map (resumable, planned for <= 2 h on 2 CPU cores): results/regime/report.md
regime: venv data
	$(PY) -m rws_jax regime --out results/regime

# ... committed: docs/regime/ (report, figure, regime.json) and the paragraph on it in README and docs/results/regime.md
regime-docs: regime
	$(PY) -m rws_jax regime --out results/regime --report-only --export docs/regime --splice README.md \
	  --splice docs/results/regime.md

# Static types: mypy over rws_jax/ (configured in pyproject.toml's [tool.mypy]); `make test`
# (so CI) runs it first. Seconds: mypy keeps its results in .mypy_cache between runs.
typecheck: venv
	$(PY) -m mypy

# The default suite (what .ci/run runs): both cores (pytest-xdist; a test module stays on one
# worker, so its module-scoped fixtures are built once), one XLA compilation cache per session
# (tests/conftest.py). JOBS=1 runs it in one process.
JOBS ?= 2
PYTEST_JOBS = $(if $(filter 1,$(JOBS)),,-n $(JOBS) --dist loadfile)

test: venv data typecheck
	$(PY) -m pytest -q $(PYTEST_JOBS) --durations=15 tests

# The default suite plus what needs the extras: the torch import and training-throughput
# tests and the corruption fidelity tests against imagecorruptions (its full table takes minutes).
test-all: venv-all data
	$(VENV_ALL)/bin/python -m pytest -q $(PYTEST_JOBS) tests

test-fast: venv
	$(PY) -m pytest -q $(PYTEST_JOBS) -m "not slow" tests

# The default suite counting every passing plain `assert` (results/assert_count.txt: one line
# per process); compare before and after a change that makes tests cheaper.
test-count: venv data
	mkdir -p results && rm -f results/assert_count.txt
	RWS_ASSERT_COUNT_FILE=$(CURDIR)/results/assert_count.txt $(PY) -m pytest -q $(PYTEST_JOBS) \
	  -o enable_assertion_pass_hook=true tests
	@awk '{n += $$2} END {print "passing asserts:", n}' results/assert_count.txt

bench-quick: venv
	$(PY) -m benchmarks --quick --out results/bench-quick

bench: venv data
	$(PY) -m benchmarks --out results/bench

# a full run, committed: docs/benchmarks/benchmark_results_cpu.{md,json} and the targets table of
# docs/results/benchmarks.md
bench-docs: bench
	cp results/bench/results.md docs/benchmarks/benchmark_results_cpu.md
	cp results/bench/results.json docs/benchmarks/benchmark_results_cpu.json
	$(PY) -m benchmarks.report --json docs/benchmarks/benchmark_results_cpu.json --splice docs/results/benchmarks.md

# Training throughput of our jitted step vs. a PyTorch loop (docs/benchmarks/train_throughput_cpu.md).
bench-train: venv
	$(PY) -m benchmarks.train_throughput --out results/bench-train

# The documentation site (docs/, MyST Markdown; the notebooks of colabs/ rendered, not run; the
# API reference generated from the docstrings) -> docs/_build/html/index.html. Every Sphinx
# warning is an error. .ci/run builds it after the tests.
docs: $(VENV)/.docs-installed
	rm -rf docs/api/generated
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

grid: venv data
	$(PY) -m rws_jax corruption-grid --out results/corruption_grid.png

clean:
	rm -rf $(VENV) $(VENV_ALL) results runs .pytest_cache docs/_build docs/api/generated
