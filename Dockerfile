# spikeprep: the CLI in a container, with the pinned dependencies of requirements.lock.
#
#   docker build -t spikeprep .                                        # CPU (default)
#   docker build -t spikeprep:cuda --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#       --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#   docker run --rm -v $PWD/data:/data spikeprep ingest /data/raw --out /data/store
#
# torch and torchvision come from TORCH_INDEX (the CPU wheels by default, which carry no CUDA libraries);
# everything else from requirements.lock, less the CUDA runtime packages that only the CUDA torch wheel needs.
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
# python3 for CUDA bases; libgl1 and libglib2.0-0 for opencv-python; gcc and libc6-dev for the CPU attention
# kernel (model/cpu_attention.py compiles it on first use for the machine it runs on; without a compiler CPU
# training falls back to the slower formula). .git is not copied (.dockerignore), so run logs record the
# revision as unknown; tag the image with it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip libgl1 libglib2.0-0 gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
COPY requirements.lock ./
RUN pip install --upgrade pip \
 && pip install --index-url ${TORCH_INDEX} $(grep -E '^(torch|torchvision)==' requirements.lock) \
 && grep -vE '^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z]+)==' requirements.lock > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

COPY . .
RUN pip install --no-deps --no-build-isolation -e . && spikeprep --help > /dev/null

ENTRYPOINT ["spikeprep"]
CMD ["--help"]
