# spikeprep: the CLI in a container, with the pinned versions of requirements.lock.
#
#   docker build -t spikeprep .                                        # CPU (default)
#   docker build -t spikeprep:cuda --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#       --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#   docker run --rm -v $PWD/data:/data spikeprep ingest /data/raw --out /data/store
#
# Not built on the machines this project is developed on: they reach no container registry, so the base
# image cannot be pulled (README, "Docker"). Two stages: the first has the compiler, builds spikeprep's
# wheel, installs it with its runtime dependencies only (requirements.lock as constraints: no test or
# notebook packages) and compiles the CPU attention kernel once, portably (no -march=native: the image
# runs on other CPUs than the one that built it); the second copies the environment and the kernel, without
# the compiler, and runs as an unprivileged user.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# python3 for CUDA bases; gcc and libc6-dev for the kernel.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip gcc libc6-dev libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements.lock ./
# torch and torchvision from TORCH_INDEX (the CPU wheels by default, which carry no CUDA libraries); the
# constraints leave out the CUDA runtime packages that only the CUDA wheel from PyPI needs.
RUN pip install --upgrade pip setuptools \
 && pip install --index-url ${TORCH_INDEX} $(grep -E '^(torch|torchvision)==' requirements.lock) \
 && grep -vE '^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z]+)==' requirements.lock > /tmp/constraints.txt
COPY . .
RUN pip wheel --no-deps --no-build-isolation -w /tmp/wheels . \
 && pip install --constraint /tmp/constraints.txt /tmp/wheels/spikeprep-*.whl \
 && python -m model.nets.cpu_attention /opt/spikeprep/cpu_attention.so \
 && spikeprep --help > /dev/null

FROM ${BASE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="spikeprep" \
      org.opencontainers.image.description="Spike-camera-guided video deblurring: spike readers, voxelizer, alignment audit, Zarr/Parquet store, VRT + spike fusion trainer" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="${BASE}"
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1
# libgl1 and libglib2.0-0 for opencv-python; libgomp1 for the kernel's OpenMP (torch's own copy serves it
# once torch is loaded; this one makes the library loadable on its own).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libgl1 libglib2.0-0 libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 --shell /usr/sbin/nologin spikeprep
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/spikeprep /opt/spikeprep
# The prebuilt kernel (model/nets/cpu_attention.py: SPIKEPREP_KERNEL_LIB), checked against the formula when loaded.
# Caches in /tmp so that any --user can run the image (numba cannot cache into the read-only environment);
# TORCH_HOME is where VGG19/AlexNet weights are mounted (README, "Docker").
ENV PATH=/opt/venv/bin:$PATH SPIKEPREP_KERNEL_LIB=/opt/spikeprep/cpu_attention.so \
    NUMBA_CACHE_DIR=/tmp/numba-cache MPLCONFIGDIR=/tmp/matplotlib TORCH_HOME=/opt/torch
USER spikeprep
WORKDIR /data
ENTRYPOINT ["spikeprep"]
CMD ["--help"]
