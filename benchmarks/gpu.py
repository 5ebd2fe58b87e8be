"""The CUDA check: avemo annotate on a GPU, its placement, its agreement with the CPU, its speed.

    python benchmarks/gpu.py                         # on a CUDA machine (the full check)
    python benchmarks/gpu.py --device cpu            # dry run: the same steps and report on the CPU
    python benchmarks/gpu.py --seconds 2 --batch-sizes 8 --device cpu   # quick (the tests' run)

On a generated 640x480 30 fps clip with a face and speech-like audio (benchmarks/annotate.py's
``make_video``) it runs ``avemo annotate`` with the default model and with a journal-JCA pipeline
(R(2+1)D-18 112x112 + audio ResNet18 + JCA head, L = 16). That pipeline comes from a tiny training
run done here, so nothing is downloaded: the backbones keep random weights, ``avemo extract``
caches their features on the clip, ``avemo train`` fits a JCA head for a few epochs on synthetic
labels and bundles the pipeline. Its outputs mean nothing; what is checked is where things run,
how fast, and that the GPU computes what the CPU computes.

Checks (``--device cuda``; each prints PASS or FAIL and any FAIL makes the exit status 1):

- face detection: the detector's onnxruntime session really runs ``CUDAExecutionProvider``
  (onnxruntime falls back to the CPU silently when its CUDA libraries do not load);
- backbones and head: every input they get during annotate is a CUDA tensor;
- GPU vs CPU, float32 with TF32 off (``torch.backends.cuda.matmul.allow_tf32`` and
  ``torch.backends.cudnn.allow_tf32`` False): max |difference| of ``valence_raw`` /
  ``arousal_raw`` <= 1e-4 for both models. Both runs use the same CPU face detector, so the
  networks see the same crops (a CUDA detector's boxes may differ in the last bits);
- bf16 autocast on the GPU vs float32 on the CPU: CCC >= 0.999 per dimension, for both models.

Then per model and batch size (8, 32, 128 by default): frames per second end to end, per-stage
seconds and peak GPU memory (``torch.cuda.max_memory_allocated``: PyTorch's tensors; the device's
memory in use after the run, with the CUDA contexts and onnxruntime's arena, is printed beside).
With ``--device cpu`` the same steps run on the CPU (checks that need a GPU say "skipped", memory
"n/a") and the exit status is 0 if everything ran.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TOLERANCE = 1e-4  # max |GPU - CPU| of raw values, float32 with TF32 off
MIN_CCC = 0.999  # bf16 on the GPU vs float32 on the CPU, per dimension
SEQ_LEN = 16  # the journal JCA's L
TRAIN_EPOCHS = 3
FPS = 30


def _annotate_benchmark():
    """benchmarks/annotate.py as a module (its ``make_video``)."""
    path = Path(__file__).with_name("annotate.py")
    spec = importlib.util.spec_from_file_location("avemo_benchmark_annotate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_pipeline(folder: Path, video: Path, device: str) -> Path:
    """A journal-JCA pipeline from a tiny training run on ``video`` (random backbones)."""
    import torch

    from avemo import extract, models, train

    torch.manual_seed(0)
    backbones = {}
    for role, name in (("visual", "r2plus1d_18"), ("audio", "audio_resnet18")):
        backbones[role] = folder / f"{name}.safetensors"
        models.save(
            models.build(name).eval(),
            backbones[role],
            provenance={"trained": False, "source": "benchmarks/gpu.py: random weights"},
        )
    features = folder / "features"
    result = extract.extract(
        [video], None, features, visual=backbones["visual"], audio=backbones["audio"],
        device=device, progress=False,
    )  # fmt: skip
    if result.exit_code:
        raise RuntimeError("feature extraction failed")
    # the same clip under a second name: one video to train on, one to validate on
    shutil.copy(features / f"{video.stem}.npz", features / f"{video.stem}_val.npz")
    labels = folder / "labels"
    labels.mkdir()
    frames = len(np.load(features / f"{video.stem}.npz")["frame"])
    t = np.arange(frames) / FPS
    rows = np.stack([0.6 * np.sin(2 * np.pi * t / 3), 0.5 * np.cos(2 * np.pi * t / 5)], 1)
    for name in (video.stem, f"{video.stem}_val"):
        text = "valence,arousal\n" + "".join(f"{v:.4f},{a:.4f}\n" for v, a in rows)
        (labels / f"{name}.txt").write_text(text)
    pipeline = folder / "jca_journal_pipeline.safetensors"
    train.run(
        features, [labels], "jca", folder / "jca_head.safetensors",
        validation=[f"{video.stem}_val"], pipeline=pipeline, epochs=TRAIN_EPOCHS,
        seq_len=SEQ_LEN, device=device, progress=False,
    )  # fmt: skip
    return pipeline


@contextlib.contextmanager
def shared_detector(detector):
    """Every annotate call in this block uses ``detector`` (the same crops on every device)."""
    annotate_module = importlib.import_module("avemo.annotate")  # avemo.annotate is a function
    original = annotate_module.cached_detector
    annotate_module.cached_detector = lambda *args, **kwargs: detector
    try:
        yield
    finally:
        annotate_module.cached_detector = original


@contextlib.contextmanager
def input_devices(module, seen: set):
    """Record the device type of every tensor input of ``module``'s submodules' forward."""
    hooks = []

    def record(_module, inputs):
        for value in inputs:
            if hasattr(value, "device"):
                seen.add(value.device.type)

    for part in module.children():
        hooks.append(part.register_forward_pre_hook(record))
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def run(video: Path, model, device: str, **options) -> tuple[dict, np.ndarray]:
    """One annotate run: numbers and the raw ``N x 2`` values."""
    import torch

    from avemo.annotate import annotate

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    table = annotate(video, model, device=device, **options)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    record = table.attrs["avemo"]
    used = None
    if cuda:  # device-wide, after the run: CUDA contexts and onnxruntime's arena included
        free, total = torch.cuda.mem_get_info()
        used = (total - free) / 2**20
    numbers = {
        "frames": len(table),
        "fps": len(table) / seconds,
        "stages_s": {k: round(v, 2) for k, v in record["stages_s"].items()},
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "device_used_mib": used,
        "predicted": int(table["valence_raw"].notna().sum()),
    }
    return numbers, table[["valence_raw", "arousal_raw"]].to_numpy()


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Max |a - b| over frames both predict, and the CCC of each dimension."""
    from avemo.metrics import ccc

    both = ~(np.isnan(a).any(1) | np.isnan(b).any(1))
    if not both.any():
        raise RuntimeError("no frame has values in both runs")
    diff = float(np.abs(a[both] - b[both]).max())
    cccs = tuple(float(ccc(a[both, k], b[both, k])) for k in range(2))
    return diff, cccs


class Report:
    def __init__(self) -> None:
        self.failed = False

    def check(self, label: str, ok: bool | None, detail: str) -> None:
        word = "skipped" if ok is None else ("PASS" if ok else "FAIL")
        self.failed |= ok is False
        print(f"check {label}: {word} ({detail})", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (a dry run)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the clip")
    parser.add_argument(
        "--train-seconds", type=float, default=4.0,
        help="length of the clip the tiny training run extracts features from",
    )  # fmt: skip
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument(
        "--stride", type=int, help="annotate --stride (default: 1 expression model, 8 pipeline)"
    )
    parser.add_argument("--keep", type=Path, help="keep the clip and the pipeline here")
    args = parser.parse_args(argv)

    import onnxruntime
    import torch

    from avemo.annotate import resolve_model
    from avemo.devices import parse_device, torch_device
    from avemo.face.detect import build_detector

    device = str(torch_device(args.device))
    cuda = parse_device(args.device).kind == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 comparisons: no TF32 anywhere
    torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name(device) if cuda else "CPU (dry run)"
    runtimes = f"onnxruntime {onnxruntime.__version__} {onnxruntime.get_available_providers()}"
    print(f"device: {device} ({name}); torch {torch.__version__}, {runtimes}", flush=True)
    report = Report()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        video = _annotate_benchmark().make_video(folder / "face.mp4", args.seconds)
        print(f"clip: {video.name}, 640x480 {FPS} fps, {args.seconds:g} s", flush=True)
        start = time.perf_counter()
        seconds = min(args.train_seconds, args.seconds)
        (folder / "train").mkdir(exist_ok=True)
        short = _annotate_benchmark().make_video(folder / "train" / "face.mp4", seconds)
        pipeline = train_pipeline(folder / "train", short, device)
        print(f"tiny training run on {seconds:g} s (extract + {TRAIN_EPOCHS} epochs + bundle): "
              f"{time.perf_counter() - start:.1f} s", flush=True)  # fmt: skip
        models = {"default model": resolve_model(None), "journal JCA": resolve_model(pipeline)}

        # where things run
        detector = build_detector("centerface", device=args.device, backend="onnxruntime")
        providers = detector.network.providers
        report.check(
            "face detection on onnxruntime's CUDA provider",
            "CUDAExecutionProvider" in providers if cuda else None,
            f"session providers {providers}",
        )
        from avemo.annotate import _load_module

        # GPU vs CPU, with the same (CPU) face detector so that the crops are the same
        cpu_detector = build_detector("centerface", device="cpu", backend="onnxruntime")
        with shared_detector(cpu_detector):
            for label, spec in models.items():
                # the torch path is what this checks on the GPU (--backend auto picks it there)
                opts = {"bf16": False, "stride": args.stride, "backend": "torch"}
                net = _load_module(str(spec.path), spec.sha256, device, "torch", False)
                net = getattr(net, "module", net)  # the expression model's torch module
                seen: set = set()
                with input_devices(net, seen):
                    _, fp32 = run(video, spec, device, **opts)
                where = {p.device.type for p in net.parameters()}
                report.check(
                    f"{label} networks on the GPU",
                    (seen == {"cuda"} and where == {"cuda"}) if cuda else None,
                    f"inputs on {sorted(seen)}, parameters on {sorted(where)}",
                )
                # on the CPU (dry run) the run above is the reference: compared with itself
                reference = run(video, spec, "cpu", **opts)[1] if cuda else fp32
                diff, _ = agreement(fp32, reference)
                report.check(
                    f"{label} float32 {device} vs cpu",
                    diff <= TOLERANCE if cuda else None,
                    f"max |difference| of raw values {diff:.2e}, tolerance {TOLERANCE:g}",
                )
                if cuda:
                    _, values = run(video, spec, device, **{**opts, "bf16": True})
                    diff, cccs = agreement(values, reference)
                    report.check(
                        f"{label} bf16 {device} vs float32 cpu",
                        min(cccs) >= MIN_CCC,
                        f"CCC valence {cccs[0]:.5f}, arousal {cccs[1]:.5f}, max |diff| {diff:.2e}",
                    )

        # speed and memory per batch size (the detector on the device under test)
        for label, spec in models.items():
            for batch in args.batch_sizes:
                for bf16 in (False, True) if cuda and spec.kind == "pipeline" else (False,):
                    numbers, _ = run(
                        video, spec, device, batch_size=batch, bf16=bf16, stride=args.stride
                    )
                    memory = numbers["peak_gpu_mib"]
                    used = numbers["device_used_mib"]
                    memory = (
                        "n/a"
                        if memory is None
                        else (
                            f"{memory:.0f} MiB (torch; device in use after the run {used:.0f} MiB)"
                        )
                    )
                    print(
                        f"{label}, {'bf16' if bf16 else 'fp32'}, batch {batch}: "
                        f"{numbers['fps']:.1f} fps over {numbers['frames']} frames, "
                        f"peak GPU memory {memory}, "
                        f"stages (s) {json.dumps(numbers['stages_s'])}",
                        flush=True,
                    )
    if report.failed:
        print("some checks FAILED", flush=True)
        return 1
    print("done" + ("" if cuda else " (dry run on the CPU: no GPU check was made)"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
