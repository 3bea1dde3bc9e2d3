# Two entry points: `make demo` (main job on embedded defaults) and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# llama-cpp-python builds at install; no comment on the line below: make would keep the spaces before it
# in the value, and CMake rejects '2  '.
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(strip $(shell nproc 2>/dev/null || echo 2))
# llama-cpp-python: only the library the GGUF tier loads (no llava/mtmd), for portable x86-64-v3 rather
# than -march=native (one build runs on AMD and Intel alike, no AMX kernels): a quarter less compiling.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

.PHONY: demo test bench bench-frames lint docs serve clean

$(STAMP): pyproject.toml setup.py serve_app/frames/_phash_native.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev,haproxy]"
	$(BIN)/python -c "from serve_app.frames.phash import native_available as n; assert n(), 'native pHash kernel missing'"
	touch $@

demo: $(STAMP)
	$(BIN)/supportgraph demo

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/phash_bench.py

bench-frames: $(STAMP)
	$(BIN)/python benchmarks/frames_bench.py --batch 1,16

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

docs: $(STAMP)
	$(BIN)/python scripts/gen_settings_docs.py && $(BIN)/mkdocs build --strict

serve: $(STAMP)
	$(BIN)/serve run configs/local.yaml

clean:
	-[ -x $(BIN)/python ] && $(BIN)/python -c "from pathlib import Path; from serve_app.db.database import stop_embedded; stop_embedded(Path('.supportgraph/pgdata').resolve())"
	rm -rf $(VENV) build site *.egg-info serve_app/frames/*.so .supportgraph
