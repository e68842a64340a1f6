# Two commands a fresh machine needs (see README.md):
#   make demo   - train the shapes sample from scratch, evaluate it, save pictures
#   make test   - the whole test suite (slow end-to-end checks included)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: venv demo test test-fast bench notebooks clean

$(VENV)/.installed: pyproject.toml setup.py
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

# Speed and memory benchmarks (minutes; not part of the tests)
bench: venv
	$(PY) bench/bench_utils.py
	$(PY) bench/bench_detect.py --precision float32
	$(PY) bench/bench_detect.py --precision float32 --batch 8 --runs 3
	$(PY) bench/bench_detect.py --precision bfloat16
	$(PY) bench/bench_train.py --case a
	$(PY) bench/bench_train.py --case b
	$(PY) bench/bench_train.py --case c
	$(PY) bench/bench_export.py
	$(PY) bench/bench_distribute.py --all --case shapes --precision-list float32 mixed_bfloat16

# Re-run every notebook in full mode and store the outputs (figures) in them
notebooks: venv
	rm -rf output/notebook_logs
	$(PY) notebooks/run_notebooks.py --mode full --logs output/notebook_logs

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
