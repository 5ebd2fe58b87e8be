"""Clips per second of every backbone at its paper input size: fp32 and bf16 autocast, batch 1
and 8, contiguous and channels-last memory, under ``torch.inference_mode``.

    python benchmarks/backbones.py [--backbones r2plus1d_18 i3d_tcn] [--batches 1 8]
        [--seconds 4] [--device cpu|cuda] [--threads N]

Each configuration runs one warm-up call, then repeats for about ``--seconds`` (at least twice)
and reports the median. By default torch uses only the cores that are idle. Timings on a shared
machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from avemo import models
from avemo.clips import CLIP_FRAMES
from avemo.models.backbones import AUDIO_INPUT, CLIP_SIZE, I3D_CLIP_SIZE

# builder -> one input item at the paper's size
INPUTS = {
    "r2plus1d_18": (3, CLIP_FRAMES, CLIP_SIZE, CLIP_SIZE),
    "r3d_18": (3, CLIP_FRAMES, CLIP_SIZE, CLIP_SIZE),
    "resnet18_gru": (3, CLIP_FRAMES, CLIP_SIZE, CLIP_SIZE),
    "i3d_tcn": (3, CLIP_FRAMES, I3D_CLIP_SIZE, I3D_CLIP_SIZE),
    "audio_resnet18": AUDIO_INPUT,
}


def idle_cores() -> int:
    """Cores not already busy (1-minute load average), at least 1.

    On a shared machine a thread pool larger than the idle cores is far slower than a small one
    (measured here: audio ResNet18 at 4 clips/s with 2 threads vs 110 with 1 under a load of 8).
    """
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - busy))


def channels_last(model: torch.nn.Module, batch: torch.Tensor):
    """The model and its input in channels-last memory (3D for Conv3d networks).

    ResNet18-GRU's 2D network gets channels-last weights; its 5-D clips are reshaped to frames
    inside, so they stay as they are.
    """
    is_3d = any(isinstance(m, torch.nn.Conv3d) for m in model.modules())
    model = model.to(memory_format=torch.channels_last_3d if is_3d else torch.channels_last)
    if batch.dim() == 5 and is_3d:
        batch = batch.contiguous(memory_format=torch.channels_last_3d)
    elif batch.dim() == 4:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return model, batch


def measure(model, batch: torch.Tensor, dtype, seconds: float) -> float:
    """Median clips/s of ``model(batch)`` with autocast to ``dtype`` (None: fp32)."""
    device = batch.device.type
    times = []
    with (
        torch.inference_mode(),
        torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None),
    ):
        model(batch)  # warm-up: oneDNN / cuDNN pick their kernels
        start = time.perf_counter()
        while len(times) < 2 or time.perf_counter() - start < seconds:
            tick = time.perf_counter()
            model(batch)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - tick)
    return len(batch) / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=list(INPUTS), choices=list(INPUTS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: idle)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads or idle_cores())
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    print(f"{'backbone':<16}{'input':<18}{'batch':>6}{'memory':>15}{'fp32':>10}{'bf16':>10}")
    for name in args.backbones:
        model = models.build(name).eval().to(device)
        shape = INPUTS[name]
        for size in args.batches:
            batch = torch.randn(size, *shape, device=device)
            for label in ("contiguous", "channels_last"):
                if label == "contiguous":
                    model, x = model.to(memory_format=torch.contiguous_format), batch
                else:
                    model, x = channels_last(model, batch)
                rates = [measure(model, x, dtype, args.seconds) for dtype in (None, torch.bfloat16)]
                dims = "x".join(map(str, shape))
                print(
                    f"{name:<16}{dims:<18}{size:>6}{label:>15}{rates[0]:>10.1f}{rates[1]:>10.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
