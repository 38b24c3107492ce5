#!/usr/bin/env bash
# Issue 5's GPU numbers on one fresh GPU machine, in under 10 minutes:
#   1. model-only images/s per batch size (1-32), fp16 and bf16, eager and CUDA graphs (bench/gpu_model.py);
#   2. end to end over HTTP: the service on the GPU, 2 MP JPEGs, both modes, 32 and 64 clients (bench/throughput.py).
#
#   bash bench/gpu.sh            # PY=path/to/python to pick the interpreter
#
# Needs the project installed with a CUDA build of torch (`pip install -e .` after a CUDA torch
# wheel, or the CUDA container image) and the weights in model_weights/ (`python -m app.weights fetch`,
# done beforehand: the GPU machine may have no network). Results go to bench/results/ (or $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"

"$PY" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY

# 1. About 12 cells x 2 modes x 4 s, plus loading and graph capture: ~3 minutes.
timeout 330 "$PY" bench/gpu_model.py --seconds 4 --out "$OUT/gpu_model.json"

# 2. The service batches up to 32 images; decode and PNG encoding run on 12 threads beside it.
#    256 measured requests a cell; at the goal (100 images/s) a cell takes a few seconds.
timeout 240 "$PY" bench/throughput.py --systems service --sizes 2 --concurrency 32,64 --requests 256 \
    --service-env BGR_DEVICE=cuda --service-env BGR_MAX_BATCH_SIZE=32 --service-env BGR_MAX_BATCH_WAIT_MS=10 \
    --service-env BGR_DECODE_CONCURRENCY=12 --service-env BGR_QUEUE_SIZE=256 \
    --out "$OUT" --tag gpu --no-plot
