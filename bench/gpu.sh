#!/usr/bin/env bash
# Issue 19's GPU numbers on one fresh single-GPU machine, in under 10 minutes (the step limits add up to 9.5):
#   host                the host's cores (nproc, lscpu), the GPU (nvidia-smi), torch and torchvision;
#   gpu_model           model-only images/s per batch size (1-32), fp16, eager and CUDA graph, with one pass
#                       (1024²) and with two (1024² and 768², the GPU's default), bench/gpu_model.py;
#   device_pixels       the device pixel path (nvJPEG decode, the resizes, the matte's upsampling) against the
#                       CPU path on the evaluation photos, grey-level differences and time, bench/device_pixels.py;
#   device_pixel_tests  tests/test_device_pixels.py's check of the cuda path against the cpu path;
#   http-workers-N      end to end over HTTP on the defaults (two passes, device pixels on), 2 MP JPEGs, cut-outs
#                       and mattes, $CLIENTS clients from $CLIENT_PROCESSES load processes, for each worker count in
#                       $WORKERS (BGR_WORKERS), GPU utilisation sampled by nvidia-smi every 200 ms meanwhile;
#   summary             bench/gpu_summary.py: images/s, p50, p95, utilisation over each cell, the goal ratio
#                       (end-to-end ÷ model-only images/s at two passes and the batch cap) and the 150 cut-outs/s
#                       and 200 mattes/s goals, into $OUT/summary.md.
#
#   bash bench/gpu.sh                 # PY=path/to/python to pick the interpreter, OUT=folder for the results
#   GPU_SH_SMOKE=1 bash bench/gpu.sh  # every step tiny on the CPU: checks the plumbing where no GPU is
#   WORKERS="1 2 auto" CLIENTS=192 bash bench/gpu.sh   # other worker counts or load (also CLIENT_PROCESSES, REQUESTS)
#
# Needs the project installed with a CUDA build of torch and the matching torchvision (`pip install -e '.[gpu]'`
# after a CUDA torch wheel, or the CUDA container image), pytest for the test step, scikit-image for the bench's
# 2 MP input (or that JPEG already in $OUT/inputs), and the weights in model_weights/ (`python -m app.weights
# fetch`, done beforehand: the GPU machine may have no network). Evaluation photos are read from
# $BGR_SHARED_DIR/evaldata (default ../shared) when present. Each step has its own time limit and a failed step
# does not stop the next one; the exit status says whether all of them passed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-bench/results/gpu}
SMOKE=${GPU_SH_SMOKE:-0}
mkdir -p "$OUT"
failed=()

step() {  # step NAME SECONDS COMMAND...: run one step under a time limit, log it, note a failure
    local name=$1 seconds=$2
    shift 2
    echo "== $name ($(date +%T), limit ${seconds} s)"
    if ! timeout "$seconds" "$@" 2>&1 | tee "$OUT/$name.log"; then
        echo "!! $name failed or ran past ${seconds} s"
        failed+=("$name")
    fi
}

sampler=
start_sampler() {  # utilisation samples into $1 until stop_sampler (CPU busy % in a smoke run)
    if ((SMOKE)); then
        "$PY" bench/gpu_summary.py sample-cpu "$1" &
    else
        nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 >"$1" &
    fi
    sampler=$!
}
stop_sampler() {
    [[ -n $sampler ]] && kill "$sampler" 2>/dev/null && wait "$sampler" 2>/dev/null
    sampler=
}
trap stop_sampler EXIT

if ((SMOKE)); then
    # The same steps, tiny, on the CPU: a 64² model, 0.3 MP inputs, a few requests; BGR_WORKERS 1 and 2.
    DEVICE=cpu
    MODEL_ARGS=(--device cpu --dtypes float32 --resolution 64 --batch-sizes 1,2 --passes 1,2 --seconds 0.2)
    PIXEL_ARGS=(--device cpu --limit 2 --model-photos 1 --megapixels 0.1 --resolution 64)
    SIZES=0.3 CLIENTS=${CLIENTS:-2} CLIENT_PROCESSES=${CLIENT_PROCESSES:-2} REQUESTS=${REQUESTS:-4} WORKERS=${WORKERS:-1 2}
    BATCH=2 SERVICE_EXTRA=(--service-env BGR_RESOLUTION=64)
    LIMIT_HOST=30 LIMIT_MODEL=120 LIMIT_PIXELS=240 LIMIT_TESTS=120 LIMIT_HTTP=240
else
    DEVICE=cuda
    MODEL_ARGS=(--device cuda --dtypes float16 --batch-sizes 1,2,4,8,16,32 --passes 1,2 --seconds 1.0)
    PIXEL_ARGS=(--device cuda)
    # 128 clients keep a batch of 32 forming while another runs and others decode or encode.
    SIZES=2 CLIENTS=${CLIENTS:-128} CLIENT_PROCESSES=${CLIENT_PROCESSES:-4} REQUESTS=${REQUESTS:-512} WORKERS=${WORKERS:-1 auto}
    BATCH=32 SERVICE_EXTRA=()
    LIMIT_HOST=20 LIMIT_MODEL=110 LIMIT_PIXELS=80 LIMIT_TESTS=45 LIMIT_HTTP=140
fi

# Before any step: a machine without CUDA (or the weights) would only fail every step slowly.
if ((!SMOKE)); then
    "$PY" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device visible to torch"' || exit 1
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,memory.total --format=csv || true
fi

step host "$LIMIT_HOST" "$PY" bench/gpu_summary.py host "$OUT" --device "$DEVICE"

step gpu_model "$LIMIT_MODEL" "$PY" bench/gpu_model.py "${MODEL_ARGS[@]}" --out "$OUT/gpu_model.json"

step device_pixels "$LIMIT_PIXELS" "$PY" bench/device_pixels.py "${PIXEL_ARGS[@]}" --inputs "$OUT/inputs" --json "$OUT/device_pixels.json"

step device_pixel_tests "$LIMIT_TESTS" "$PY" -m pytest -q -p no:cacheprovider tests/test_device_pixels.py -k "cuda or switch"

# The service on its defaults but for the batch cap (32), the queue (256: no 429 at $CLIENTS clients), and the
# decode threads (12 a process); BGR_WORKERS as given. Each cell's end is stamped, so the summary takes the
# GPU's utilisation over the measured requests alone.
for workers in $WORKERS; do
    start_sampler "$OUT/util-workers-$workers.csv"
    step "http-workers-$workers" "$LIMIT_HTTP" "$PY" bench/gpu_summary.py stamp -- \
        "$PY" bench/throughput.py --systems service --sizes "$SIZES" --modes backgroundRemoval,foregroundMatting \
        --concurrency "$CLIENTS" --requests "$REQUESTS" --client-processes "$CLIENT_PROCESSES" \
        --service-env BGR_DEVICE="$DEVICE" --service-env BGR_WORKERS="$workers" --service-env BGR_MAX_BATCH_SIZE="$BATCH" \
        --service-env BGR_MAX_BATCH_WAIT_MS=10 --service-env BGR_DECODE_CONCURRENCY=12 --service-env BGR_QUEUE_SIZE=256 \
        "${SERVICE_EXTRA[@]}" --out "$OUT" --tag "workers-$workers" --no-plot
    stop_sampler
done

step summary 15 "$PY" bench/gpu_summary.py summarise "$OUT" --passes 2 --batch "$BATCH"

if ((${#failed[@]})); then
    echo "failed: ${failed[*]}"
    exit 1
fi
echo "all steps passed"
