# Quick start:  make serve  (set up, then serve on :5000)   |   make test  (set up, then run every test)
# On a machine without a GPU: make serve TORCH_VARIANT=cpu  (PyTorch's CPU wheels, as the Dockerfile's build arg)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
WEIGHTS := model_weights/isnet-general.safetensors
TORCH_VARIANT ?=
TORCH_INDEX_BASE ?= https://download.pytorch.org/whl
# A variable, because a literal comma would split $(if ...)'s arguments.
TORCH_SPEC := torch>=2.2,<=2.14.1

.PHONY: setup weights serve test clean

# What serving needs: the runtime dependencies, the weights converter (convert) and the CPU runtime (cpu).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(if $(TORCH_VARIANT),$(PY) -m pip install --index-url $(TORCH_INDEX_BASE)/$(TORCH_VARIANT) '$(TORCH_SPEC)')
	$(PY) -m pip install -e '.[convert,cpu]'
	touch $@

# ... and the test tools on top.
$(VENV)/.tested: $(VENV)/.installed
	$(PY) -m pip install -e '.[convert,cpu,test]'
	touch $@

setup: $(VENV)/.installed

weights: setup
	$(PY) -m app.weights fetch

serve: weights
	$(PY) -m app

test: $(VENV)/.tested weights
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) model_weights/*.safetensors model_weights/*.json model_weights/*.onnx

# Benchmark set-up (bench/throughput.py): rembg's library in the project's environment, and rembg's
# server in its own (its CLI extra pins older FastAPI/Uvicorn than the service uses).
.PHONY: bench-setup
bench-setup: setup
	$(PY) -m pip install -e '.[bench]'
	$(PYTHON) -m venv .venv-rembg
	.venv-rembg/bin/pip install 'rembg[cpu,cli]>=2.0.60'
