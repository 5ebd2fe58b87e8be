"""Devices: the one parser of ``--device`` and what each runtime makes of it.

``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N`` become a torch
device (:func:`torch_device`) and onnxruntime execution providers (:func:`onnx_providers`) from
the same parse, so the face detector and the networks always agree. Also here: bf16 autocast and
host-to-device copies, which every batched forward pass uses.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from dataclasses import dataclass

import numpy as np

from avemo.errors import AvemoError

log = logging.getLogger("avemo")

KINDS = ("auto", "cpu", "cuda")
USAGE = "use auto, cpu, cuda or cuda:N"


@dataclass(frozen=True)
class DeviceSpec:
    """A parsed ``--device``: ``kind`` is auto, cpu or cuda; ``index`` the GPU (None: default)."""

    kind: str
    index: int | None = None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse_device(spec: str | DeviceSpec | None = "auto") -> DeviceSpec:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` -> :class:`DeviceSpec` (no hardware is probed)."""
    if isinstance(spec, DeviceSpec):
        return spec
    text = str(spec or "auto").strip().lower()
    kind, colon, index = text.partition(":")
    if kind not in KINDS or (colon and (kind != "cuda" or not index.isdigit())):
        raise AvemoError(f"unknown device {spec!r}: {USAGE}")
    return DeviceSpec(kind, int(index) if colon else None)


@functools.cache
def cuda_available() -> bool:
    """Whether a CUDA GPU is usable, without importing torch when it is not loaded yet: the
    driver library (``libcuda``) is asked for its device count, as torch itself does at start."""
    if "torch" in sys.modules:
        return bool(sys.modules["torch"].cuda.is_available())
    import ctypes

    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return False
    return count.value > 0


def resolve(spec: str | DeviceSpec | None = "auto") -> str:
    """``cpu``, ``cuda`` or ``cuda:N``: what ``spec`` comes to on this machine (``auto``: CUDA
    when there is a GPU); a CUDA device that is not there is an error. Imports no torch."""
    parsed = parse_device(spec)
    if parsed.kind == "auto":
        return "cuda" if cuda_available() else "cpu"
    if parsed.kind == "cuda" and not cuda_available():
        raise AvemoError(f"device {str(parsed)!r} requested but CUDA is not available")
    return str(parsed)


def torch_device(spec: str | DeviceSpec | None = "auto"):
    """The torch device of ``spec``; a CUDA device that is not there is an error."""
    import torch

    parsed = parse_device(resolve(spec))
    if parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise AvemoError(
            f"device {str(parsed)!r}: only {torch.cuda.device_count()} GPU(s) visible"
        )
    return torch.device(str(parsed))


def onnx_providers(spec: str | DeviceSpec | None = "auto") -> list:
    """onnxruntime execution providers for ``spec``.

    CUDA (then the CPU as fallback) when a CUDA device is asked for or ``auto`` and onnxruntime
    has the CUDA provider (the ``gpu`` extra); otherwise the CPU provider, named explicitly.
    """
    import onnxruntime

    parsed = parse_device(spec)
    cpu = ["CPUExecutionProvider"]
    if parsed.kind == "cpu":
        return cpu
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        if parsed.kind == "cuda":
            log.warning(
                "device %s: onnxruntime has no CUDA provider (install the gpu extra); "
                "face detection runs on the CPU",
                parsed,
            )
        return cpu
    return [("CUDAExecutionProvider", {"device_id": parsed.index or 0}), *cpu]


@functools.cache
def cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (the ``avx512_bf16`` or ``amx_bf16`` flag in
    ``/proc/cpuinfo``; False where that file is missing), without importing torch: elsewhere
    bf16 is emulated or runs in float32, and the backends are ranked by their float32 speed."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def native_bf16(device) -> bool:
    """Whether ``device`` (a torch device) computes bfloat16 natively (CPUs with AVX512-BF16 or
    AMX, recent GPUs), where autocast runs the 3D backbones about twice as fast."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private API: absent means no fast path known
        return False


def autocast(device, bf16: bool):
    """bf16 autocast on request (CPU or CUDA), else a no-op context."""
    import torch

    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def to_device(array: np.ndarray, device):
    """A host array on ``device``; through pinned memory and a non-blocking copy on CUDA."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor
