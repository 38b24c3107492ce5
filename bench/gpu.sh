#!/usr/bin/env bash
# Issue 5's GPU numbers on one fresh GPU machine, in about 8 minutes:
#   1. model-only images/s per batch size (1-32), fp16 and bf16, eager and CUDA graphs (bench/gpu_model.py),
#      and fp16 at 768², the second pass a GPU runs by default (BGR_SECOND_RESOLUTION=auto);
#   2. end to end over HTTP: the service on the GPU on its defaults (two passes), 2 MP JPEGs, both modes,
#      16 and 64 clients (bench/throughput.py); then 64 clients with one pass (BGR_SECOND_RESOLUTION=0),
#      and 64 clients at Python's default GIL switch interval (5 ms, against the service's 1 ms);
#   3. fp16 mattes against fp32 on the same GPU (bench/engine_agreement.py, scikit-image photos);
#   4. where one 2 MP request's time goes with the model on the GPU (bench/stages.py).
# bf16's agreement (1.2e-3 mean difference, BENCHMARKS.md) is left out for time: run
# `bench/engine_agreement.py --candidate device=cuda dtype=bfloat16` by hand.
#
#   bash bench/gpu.sh            # PY=path/to/python to pick the interpreter
#
# Needs the project installed with a CUDA build of torch (`pip install -e .` after a CUDA torch
# wheel, or the CUDA container image) and the weights in model_weights/ (`python -m app.weights fetch`,
# done beforehand: the GPU machine may have no network). Results go to bench/results/ (or $OUT).
# Each step has its own time limit and a failed step does not stop the next one; the exit status
# says whether all of them passed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
failed=()

step() {  # step NAME SECONDS COMMAND...: run one step under a time limit, log it, note a failure
    local name=$1 seconds=$2
    shift 2
    echo "== $name ($(date +%T))"
    if ! timeout "$seconds" "$@" 2>&1 | tee "$OUT/$name.log"; then
        echo "!! $name failed or ran past ${seconds} s"
        failed+=("$name")
    fi
}

"$PY" - <<'PY' || exit 1
import torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
PY
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.limit,memory.total --format=csv || true

# 12 cells x 2 dtypes x (eager + graph) x 1.5 s, plus loading and graph capture: about 1.5 minutes.
step gpu_model 150 "$PY" bench/gpu_model.py --seconds 1.5 --out "$OUT/gpu_model.json"
step gpu_model_768 40 "$PY" bench/gpu_model.py --seconds 1.5 --resolution 768 --dtypes float16 --no-graphs \
    --batch-sizes 8,32 --out "$OUT/gpu_model_768.json"

# The service batches up to 32 images; decoding and PNG encoding run on 12 threads beside it, and
# the load comes from 3 processes (one Python process alone cannot keep up with a GPU).
http_load=("$PY" bench/throughput.py --systems service --sizes 2 --requests 256 --client-processes 3 \
    --service-env BGR_DEVICE=cuda --service-env BGR_MAX_BATCH_SIZE=32 --service-env BGR_MAX_BATCH_WAIT_MS=10 \
    --service-env BGR_DECODE_CONCURRENCY=12 --service-env BGR_QUEUE_SIZE=256 --out "$OUT" --no-plot)
step throughput 120 "${http_load[@]}" --concurrency 16,64 --tag gpu

# The same at 64 clients with one model pass: what the GPU's default second pass costs end to end.
step throughput_one_pass 80 "${http_load[@]}" --concurrency 64 --service-env BGR_SECOND_RESOLUTION=0 --tag gpu-one-pass

# The same at 64 clients with Python's default 5 ms GIL switch interval, against the service's 1 ms.
step throughput_switch5 80 "${http_load[@]}" --concurrency 64 --service-env BGR_SWITCH_INTERVAL_MS=5 --tag gpu-switch5

step agreement 50 "$PY" bench/engine_agreement.py --sample-photos --json "$OUT/agreement.json" \
    --reference device=cuda dtype=float32 --candidate device=cuda dtype=float16

step stages 50 env BGR_DEVICE=cuda "$PY" bench/stages.py --megapixels 2 --repeats 5

if ((${#failed[@]})); then
    echo "failed: ${failed[*]}"
    exit 1
fi
echo "all steps passed"
