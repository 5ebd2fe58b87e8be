# avemo for batch annotation on NVIDIA GPUs:
#   docker build -t avemo .
#   docker run --gpus all -v "$PWD":/data avemo annotate /data/in -o /data/out
# CUDA 12 + cuDNN 9 runtime for onnxruntime-gpu (face detection); PyTorch's wheels bring their
# own CUDA libraries (a driver recent enough for them is needed on the host).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    AVEMO_HOME=/cache/avemo

# libgl1 and libglib2.0-0: OpenCV (opencv-python, required by insightface) loads them on import
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc g++ \
        libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/avemo
ENV PATH=/opt/avemo/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY avemo ./avemo
COPY weights ./weights
# onnxruntime and onnxruntime-gpu overwrite each other's files: install avemo, then swap
RUN pip install -c constraints.txt . \
    && pip uninstall -y onnxruntime \
    && pip install -c constraints.txt ".[gpu]"

WORKDIR /data
VOLUME ["/cache"]
ENTRYPOINT ["avemo"]
CMD ["--help"]
