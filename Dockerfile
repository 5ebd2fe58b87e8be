# avemo for batch annotation on NVIDIA GPUs, on one host or as the image of a Ray cluster:
#   docker build -t avemo .
#   docker run --gpus all -v "$PWD":/data avemo annotate /data/in -o /data/out
#
# CUDA comes from the wheels, not from the base image. torch 2.14's wheels bring CUDA 13 and
# cuDNN 9 for CUDA 13 (nvidia/cu13/lib, nvidia/cudnn/lib in site-packages), and onnxruntime-gpu
# 1.31 needs exactly those (it links libcudart.so.13, libcublas(Lt).so.13, libcurand.so.10 and
# opens libcudnn.so.9 at run time). A CUDA base image would be a second, unused copy of the
# toolkit (and today's cuda:12.x images have the wrong major version for onnxruntime-gpu), so
# the base is a slim Python, LD_LIBRARY_PATH points every process (avemo, Ray workers) at the
# wheels' libraries, and `docker run --gpus all` (NVIDIA Container Toolkit) adds the driver.
# tests/test_install.py replays the pip commands below in a fresh venv and checks that the CUDA
# provider is there and that every library it links is found.
FROM python:3.11-slim-bookworm

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    AVEMO_HOME=/cache/avemo \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# gcc/g++: insightface builds from source; libgl1 and libglib2.0-0: OpenCV (opencv-python,
# required by insightface) loads them on import
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc g++ libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/avemo
ENV PATH=/opt/avemo/bin:$PATH \
    LD_LIBRARY_PATH=/opt/avemo/lib/python3.11/site-packages/nvidia/cu13/lib:/opt/avemo/lib/python3.11/site-packages/nvidia/cudnn/lib

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY avemo ./avemo
COPY weights ./weights
# onnxruntime (a base dependency) and onnxruntime-gpu install the same module and overwrite each
# other's files: after installing everything, remove both and put back the GPU build alone
# (--no-deps: its dependencies are onnxruntime's, already installed)
RUN pip install -c constraints.txt ".[gpu,ray]" \
    && pip uninstall -y onnxruntime onnxruntime-gpu \
    && pip install -c constraints.txt --no-deps onnxruntime-gpu

WORKDIR /data
VOLUME ["/cache"]
ENTRYPOINT ["avemo"]
CMD ["--help"]
