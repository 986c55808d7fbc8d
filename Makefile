# The Phoenix textbook. `make book` and `make test` are all a reader needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CHAPTERS := $(sort $(wildcard chapters/[0-9][0-9]_*.md))
NOTEBOOKS := $(patsubst chapters/%.md,notebooks/%.ipynb,$(CHAPTERS))
# Figures are written only when this is set (make book / make figures); the
# tests and a reader's own runs leave figures/ untouched.
FIGURES_ENV := PHOENIX_FIGURES_DIR=$(CURDIR)/figures
# Each chapter's headline numbers (phoenix_lib.results.record) go to _build/metrics/NN_slug.json
# when the book is built or tested; `python -m benchmarks.report` makes the tables of RESULTS.md
# and the README from them and from the benchmarks' records (benchmarks/results/).
METRICS_ENV := PHOENIX_METRICS_DIR=$(CURDIR)/_build/metrics
# glibc serves blocks of 32 MiB and more with a fresh mmap and unmaps them on free, so
# every training step of Chapter 5 (its 2**18-row post table) re-faults its gradient and
# Adam buffers: ~25,000 page faults and half the step's CPU time. Keeping big blocks in
# the heap removes that (benchmarks/RESULTS.md). Every command below inherits it.
export MALLOC_MMAP_THRESHOLD_ := 4294967296
export MALLOC_TRIM_THRESHOLD_ := 68719476736
# JAX writes every program it compiles to this folder and reads it back in later processes:
# a second `make test` or `make book`, or a chapter re-run in `make lab`, skips most of its
# compiling (compiling is half of the suite's time; benchmarks/RESULTS.md section 8). The
# programs are the same, so are the numbers. A fresh clone starts empty; the folder grows
# by some 20 MiB each time the library's code changes; `make clean` empties it. Set
# JAX_ENABLE_COMPILATION_CACHE=false to compile everything every time.
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/_build/jax-cache
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 0

.PHONY: help venv book figures html mathjax test test-latest bench lint lab constraints clean

help:
	@echo "make book     execute every chapter into notebooks/ and regenerate figures/"
	@echo "make test     unit tests + every chapter re-executed under nbval"
	@echo "make test-latest  the same suite on Python 3.13 with the newest release of every dependency"
	@echo "make lab      JupyterLab with chapters opening as notebooks"
	@echo "make figures  regenerate figures/ only"
	@echo "make html     the HTML book in _build/html (executes chapters, cached)"
	@echo "make bench    every benchmark (tables, benchmarks/results/); see benchmarks/RESULTS.md"
	@echo "make lint     ruff"

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed; run make PYTHON=python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[book,test]"
	touch $@

notebooks/%.ipynb: chapters/%.md $(STAMP) $(wildcard phoenix_lib/*.py)
	@mkdir -p notebooks
	$(FIGURES_ENV) $(METRICS_ENV) $(BIN)/jupytext --to ipynb --execute --run-path chapters --output $@ $<

book: $(NOTEBOOKS)
	$(BIN)/python -m benchmarks.report

figures: $(STAMP)
	@for c in $(CHAPTERS); do \
	  echo "figures: $$c"; \
	  $(FIGURES_ENV) $(METRICS_ENV) $(BIN)/jupytext --to ipynb --execute --run-path chapters \
	    --output notebooks/$$(basename $$c .md).ipynb $$c || exit 1; \
	done

# MathJax 3 from the npm registry, copied next to the HTML pages (see _config.yml).
MATHJAX := _build/vendor/mathjax
mathjax: $(MATHJAX)/es5/tex-chtml.js

$(MATHJAX)/es5/tex-chtml.js:
	rm -rf $(MATHJAX) && mkdir -p _build/vendor
	cd _build/vendor && npm pack --silent mathjax@3.2.2 >/dev/null && tar xzf mathjax-3.2.2.tgz \
	  && rm mathjax-3.2.2.tgz && mv package mathjax

html: $(STAMP) mathjax
	$(BIN)/jupyter-book build . -W -n --keep-going

test: $(STAMP)
	$(METRICS_ENV) $(BIN)/python -m pytest

# The suite on the newest releases (Python 3.13, nothing pinned), in its own environment,
# upgraded on every run: what a new reader gets from `pip install` today.
# PYTHON_LATEST: python3.13 on the PATH, else pyenv's newest 3.13.
PYTHON_LATEST ?= $(shell python3.13 -c 'import sys; print(sys.executable)' 2>/dev/null || ls $(HOME)/.pyenv/versions/3.13*/bin/python3.13 2>/dev/null | tail -1)
VENV_LATEST := .venv-latest
test-latest:
	@test -n "$(PYTHON_LATEST)" || { echo "make test-latest needs Python 3.13: install it, or pass PYTHON_LATEST=/path/to/python3.13"; exit 1; }
	test -x $(VENV_LATEST)/bin/python || $(PYTHON_LATEST) -m venv $(VENV_LATEST)
	$(VENV_LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[book,test]"
	$(VENV_LATEST)/bin/python -m pip list 2>/dev/null | grep -E '^(jax|jaxlib|numpy|optax|dm-haiku) '
	PHOENIX_METRICS_DIR=$(CURDIR)/_build/metrics-latest $(VENV_LATEST)/bin/python -m pytest

# The benchmarks measure compile times, so they never read programs from the cache
# (benchmarks.book turns it on again for the suites it runs).
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[bench]"
	for b in serving mpzch training ablations pipeline book sharding compact; do \
	  JAX_ENABLE_COMPILATION_CACHE=false $(BIN)/python -m benchmarks.$$b || exit 1; \
	done
	$(BIN)/python -m benchmarks.report

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# lab/overrides.json: chapters open as Jupytext notebooks with their kernel
# started; no news or update checks (the book works offline). tests/test_lab.py
# starts JupyterLab with the same settings.
lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=$(CURDIR) --LabApp.app_settings_dir=$(CURDIR)/lab \
	  $(if $(filter 0,$(shell id -u)),--allow-root)

constraints: $(STAMP)
	( head -2 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -vi '^phoenix' ) > constraints.tmp
	mv constraints.tmp constraints.txt

clean:
	rm -rf $(VENV) $(VENV_LATEST) notebooks .pytest_cache _build/jax-cache
