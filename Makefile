# memlab — the two commands a user needs are `make demo` and `make test`; both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.py))

.PHONY: help venv demo compare test test-unit test-notebooks notebooks bench ablations capacity browser-test clean

help:
	@echo "make demo            create .venv if needed, then train and compare tiny dense / MemoryFormer / Memory+ LMs"
	@echo "make compare         layer-level comparison vs nn.Linear (python -m memlab compare)"
	@echo "make test            create .venv if needed, then run every test (unit, Triton interpreter, nbval)"
	@echo "make notebooks       re-execute every notebook in full mode and refresh the committed .ipynb (~16 min)"
	@echo "make bench           kernel benchmarks (kernels/bench.py)"
	@echo "make ablations       every ablation study (python -m memlab sweep --list); cached and resumable: rerun after a kill"
	@echo "make capacity        the factual-capacity study of notebook 07 (~2 h on 2 cores); cached and resumable"
	@echo "make browser-test    notebook 08 in JupyterLab + headless Chromium (needs: apt-get install chromium; pip install -e '.[browser]')"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e ".[test]"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m memlab demo

compare: $(STAMP)
	$(PY) -m memlab compare

# Unit and kernel tests: with no GPU, tests/conftest.py turns on TRITON_INTERPRET=1 so Triton kernels run on the CPU.
test-unit: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest -q tests

# nbval runs the committed, executed notebooks in fast mode (MEMLAB_FAST=1 shrinks sizes in each first cell).
test-notebooks: $(STAMP)
	MEMLAB_FAST=1 $(PY) -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider notebooks

test: test-unit test-notebooks

notebooks: $(STAMP)
	@for nb in $(NOTEBOOKS); do \
	  echo "executing $$nb"; \
	  $(VENV)/bin/jupytext --set-kernel python3 --to ipynb --execute $$nb || exit 1; \
	done

bench: $(STAMP)
	$(PY) kernels/bench.py

# Every study of memlab/lab/studies.py into runs/sweeps/<study>/ (~1.5 h on 2 quiet cores; 2.5 h measured on a shared machine). Finished points are cached, so the
# same command resumes a killed run; JOBS=2 trains two points at once.
JOBS ?= 1
ablations: $(STAMP)
	$(PY) -m memlab sweep --study all --jobs $(JOBS) --export data/ablations

# The factual-capacity study (notebook 07) into runs/sweeps/capacity/, exported to data/capacity/ (committed: the
# notebook reads it). JOBS=2 by default: its tiny single-thread runs keep both cores busy. Resumes after a kill.
capacity: $(STAMP)
	$(PY) -m memlab sweep --study capacity --jobs $(or $(CAPACITY_JOBS),2) --export data/capacity
	$(PY) -c "from memlab.lab import capacity; capacity.export_curves()"  # data/capacity/capacity.curves.csv

# Notebook 08 run in a real JupyterLab by headless Chromium (Playwright): widgets render, a slider redraws the plot.
# Skips with the reason when Chromium or Playwright is missing; screenshots go to runs/browser/. ~1-3 min.
browser-test: $(STAMP)
	MEMLAB_BROWSER_TEST=1 $(PY) -m pytest -q -rs -p no:cacheprovider tests/test_browser.py

clean:
	rm -rf $(VENV) .pytest_cache
