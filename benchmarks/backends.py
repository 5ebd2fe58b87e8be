"""Speed of every network on every backend: items/s at batch 1 and 8, float32 and bfloat16.

    python benchmarks/backends.py                  # all networks, 3 s per measurement
    python benchmarks/backends.py --seconds 1 --networks expression detector

Networks as annotate runs them (:mod:`avemo.models.deploy`, converted by :mod:`avemo.backends`
into a throwaway cache): the bundled expression model (64x64 crops), CenterFace (one 640x480
frame at the 320 px working size), R(2+1)D-18 (8 x 112 x 112 uint8 clips, normalisation
included), the audio ResNet18 (64 x 107 spectrograms) and the JCA head (sequences of L = 16
clips, with audio_share). onnxruntime has no bfloat16 CPU kernels (its bf16 columns are empty),
and a CPU without native bf16 (AVX512-BF16, AMX) gets no bf16 columns at all.
Weights are random except the expression model's and CenterFace's: speed does not depend on them.
Also prints how far CenterFace's landmarks move in bfloat16 (in inter-ocular distances, on the
frames of the sample clip), which decides ``avemo.face.detect.DETECT_BF16``. :data:`AUTO` in
avemo/backends.py is this table's ranking.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

BACKENDS = ("torch", "onnxruntime", "openvino")
NETWORKS = ("expression", "detector", "visual", "audio", "head")
BATCHES = (1, 8)
SEQ_LEN = 16  # the journal JCA's L


def rate(step, items: int, seconds: float) -> float:
    """Items per second of ``step()``, after one warm-up call, over at least 2 calls."""
    step()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or calls < 2:
        step()
        calls += 1
    return calls * items / elapsed


def sources() -> dict:
    """network -> (source, make inputs for a batch, unit)."""
    import torch

    from avemo import models
    from avemo.face.detect import centerface_source
    from avemo.features import Backbones
    from avemo.files import sha256_file
    from avemo.models import expression
    from avemo.values import expression_source, head_source

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    visual, audio = models.build("r2plus1d_18").eval(), models.build("audio_resnet18").eval()
    description = {
        role: {"builder": m.avemo_config["builder"], "kwargs": {}, "preprocessing":
               m.avemo_config["preprocessing"]}
        for role, m in (("visual", visual), ("audio", audio))
    }  # fmt: skip
    backbones = Backbones(visual, audio, description)

    class Holder:  # a pipeline's head and L
        seq_len = SEQ_LEN
        head = models.build("jca", seq_len=SEQ_LEN).eval()

    path = expression.DEFAULT_CHECKPOINT
    return {
        "expression": (
            expression_source(path, sha256_file(path)),
            lambda b: (rng.integers(0, 256, (b, 64, 64), dtype=np.uint8),),
            "crops",
        ),
        "detector": (
            centerface_source(),
            lambda b: (rng.uniform(0, 255, (b, 3, 256, 320)).astype(np.float32),),
            "frames",
        ),
        "visual": (
            backbones.source("visual"),
            lambda b: (rng.integers(0, 256, (b, 8, 112, 112, 3), dtype=np.uint8),),
            "clips",
        ),
        "audio": (
            backbones.source("audio"),
            lambda b: (rng.standard_normal((b, 1, 64, 107)).astype(np.float32),),
            "spectrograms",
        ),
        "head": (
            head_source(Holder(), (512, 512), share=True),
            lambda b: tuple(
                rng.standard_normal((b, SEQ_LEN, 512)).astype(np.float32) for _ in range(2)
            ),
            "sequences",
        ),
    }


def landmark_shift(frames: int = 120) -> tuple[float, float]:
    """Median and 95th percentile distance between CenterFace's bf16 and float32 landmarks on
    OpenVINO, in inter-ocular distances, over the sample clip's frames."""
    from avemo.decode import iter_frames
    from avemo.face.detect import CenterFace
    from avemo.files import sample_video

    exact = CenterFace(device="cpu", backend="openvino", bf16=False)
    fast = CenterFace(device="cpu", backend="openvino", bf16=True)
    shifts = []
    for k, frame in enumerate(iter_frames(sample_video())):
        if k >= frames:
            break
        a, b = exact(frame.image), fast(frame.image)
        if len(a) and len(b):
            iod = np.linalg.norm(a.landmarks[0, 1] - a.landmarks[0, 0])
            shifts.append(np.linalg.norm(a.landmarks[0] - b.landmarks[0], axis=1).max() / iod)
    return float(np.median(shifts)), float(np.percentile(shifts, 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    args = parser.parse_args()
    os.environ["AVEMO_HOME"] = tempfile.mkdtemp(prefix="avemo-bench-")
    import torch

    from avemo import backends
    from avemo.devices import cpu_bf16

    native = cpu_bf16()  # elsewhere bf16 is emulated (torch, very slow) or float32 (OpenVINO)
    print(
        f"torch threads {torch.get_num_threads()}, cpu count {os.cpu_count()}, "
        f"native bf16 {'yes' if native else 'no (bf16 columns skipped)'}"
    )
    print(f"{'network':<11} {'backend':<12} " + " ".join(
        f"{f'b{b} {p}':>12}" for p in ("fp32", "bf16") for b in BATCHES
    ))  # fmt: skip
    table = sources()
    for name in args.networks:
        source, inputs, unit = table[name]
        for backend in BACKENDS:
            try:
                chosen = backends.choose(backend, name, "cpu")
            except Exception as error:  # a backend that is not installed
                print(f"{name:<11} {backend:<12} {error}")
                continue
            if chosen != backend:  # the detector has no torch form
                continue
            cells = []
            for bf16 in (False, True):
                if bf16 and (backend == "onnxruntime" or not native):
                    cells += ["-"] * len(BATCHES)
                    continue
                network = backends.load(source, backend=backend, device="cpu", bf16=bf16)
                for batch in BATCHES:
                    x = inputs(batch)
                    cells.append(f"{rate(lambda x=x, n=network: n(*x), batch, args.seconds):.1f}")
            print(f"{name:<11} {backend:<12} " + " ".join(f"{c:>12}" for c in cells)
                  + f"  {unit}/s", flush=True)  # fmt: skip
    if "detector" in args.networks and native:
        median, p95 = landmark_shift()
        print(
            f"CenterFace bf16 vs float32 (OpenVINO) landmarks: median {median:.4f}, "
            f"95th percentile {p95:.4f} inter-ocular distances (largest of the 5 points)"
        )


if __name__ == "__main__":
    main()
