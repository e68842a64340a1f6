# Two commands a fresh machine needs (see README.md):
#   make demo   - train the shapes sample from scratch, evaluate it, save pictures
#   make test   - the whole test suite (slow end-to-end checks included)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: venv demo test test-fast bench notebooks clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m mrcnn.demo

test: venv
	$(PY) -m pytest -q

test-fast: venv
	$(PY) -m pytest -q -m "not slow"

bench: venv
	$(PY) bench/bench_utils.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
