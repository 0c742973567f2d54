# CUDA + PyTorch 2.7.0 (the torch that composer 0.32.1's pin resolves to) with this project installed.
#   docker build -t modernbert-pretrain .
#   docker build -t modernbert-pretrain:flash --build-arg FLASH_ATTN=1 .
# Usage (single node, multi-node with host networking): see launch/README.md.
ARG BASE_IMAGE=pytorch/pytorch:2.7.0-cuda12.8-cudnn9-devel
FROM ${BASE_IMAGE}

# 1: also install flash-attn (pip takes a prebuilt wheel when one matches this torch/CUDA, else compiles it,
# which takes long; MAX_JOBS bounds the parallel compile jobs and their memory).
ARG FLASH_ATTN=0
ARG MAX_JOBS=8

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    TOKENIZERS_PARALLELISM=false

# git: the training log records the commit; procps: pgrep/ps for the launch scripts and debugging.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git procps \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /workspace/modernbert-pretrain

# Dependencies first (a layer that survives code changes): the package metadata and an empty package.
COPY pyproject.toml README.md ./
RUN mkdir -p src/modernbert_pretrain && touch src/modernbert_pretrain/__init__.py \
 && pip install -e . \
 && python -c "import torch; assert torch.__version__.startswith('2.7.0'), torch.__version__"

RUN if [ "$FLASH_ATTN" = "1" ]; then \
      pip install packaging ninja psutil \
      && MAX_JOBS="$MAX_JOBS" pip install --no-build-isolation "flash-attn>=2.6" \
      && python -c "import flash_attn; print('flash-attn', flash_attn.__version__)"; \
    fi

# The code (the editable install above points at src/).
COPY . .
RUN python -c "import modernbert_pretrain, composer, streaming; print('composer', composer.__version__)"

CMD ["bash"]
