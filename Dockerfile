# The Ray image cluster.yaml runs (head and workers). Build from the repository root:
#   docker build -t ghcr.io/supportgraph/supportgraph:0.1.0 .
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 \
#                -t ghcr.io/supportgraph/supportgraph:0.1.0-cuda .      # GPU workers
# Stage 1 compiles (pHash C kernel, llama.cpp) for a portable x86-64-v3 target; stage 2 is the runtime,
# without compilers, running as uid 1000 with a read-only root filesystem (writes go to /tmp).

FROM python:3.11-slim-bookworm AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SUPPORTGRAPH_MARCH=x86-64-v3 CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
WORKDIR /src
RUN /opt/venv/bin/pip install --index-url "$TORCH_INDEX" "torch==2.13.0"
COPY pyproject.toml setup.py README.md ./
COPY serve_app ./serve_app
COPY deployments ./deployments
COPY supportgraph_tools ./supportgraph_tools
RUN /opt/venv/bin/pip install . \
    && /opt/venv/bin/python -c "from serve_app.frames.phash import native_available as n; assert n()"

FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 wget \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1000 ray && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home ray
COPY --from=build /opt/venv /opt/venv
COPY --chown=1000:1000 configs /app/configs
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp RAY_USAGE_STATS_ENABLED=0 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER 1000:1000
CMD ["supportgraph", "--help"]
