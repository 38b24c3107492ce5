# Quick start:  make serve  (set up, then serve on :5000)   |   make test  (set up, then run every test)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
WEIGHTS := model_weights/isnet-general.safetensors

.PHONY: setup weights serve test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[convert,test]'
	touch $@

setup: $(VENV)/.installed

weights: setup
	$(PY) -m app.weights fetch

serve: weights
	$(PY) -m app

test: weights
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
