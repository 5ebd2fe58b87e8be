"""Feature extraction and fusion-head training speed, projected to Aff-Wild2's size.

    python benchmarks/train.py [--part extract|train|all] [--backbones ...] [--heads ...]
        [--steps 5] [--device cpu|cuda] [--threads N]

Extraction: clips/s of each stage of ``avemo extract`` (decoding the frame times, assembling
clips from real 112x112 face crops, the visual backbone, the audio path: waveform windows,
log-mel, audio ResNet18) on the sample clip, and the combined clips/s per visual backbone; one
real ``extract_video`` run checks the combination. Training: the time of one optimiser step
(loading the batch from a memory-mapped cache + forward + backward + step) for JCA and JMT at the
papers' sizes and batch sizes, on a synthetic cache subset written to a temporary folder (the
full 2.6M-frame cache is not written: its size would be 10.6 GB at 512+512 dims and 270 GB at
the journal JCA's 25088-d visual features), and the validation throughput; both are projected to
one epoch of Aff-Wild2 (TRAIN_FRAMES, VAL_FRAMES). The GPU projection is explained in its output.
By default torch uses only the idle cores. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from avemo import models
from avemo import train as T
from avemo.cache import Features, read_features, write_features
from avemo.dataset import VALIDATION_BATCH, SequenceDataset, Video, predict_video
from avemo.extract import CropReader, Source, extract_video
from avemo.features import Backbones, FeatureEngine
from avemo.models.backbones import normalise_clips

TRAIN_FRAMES = 2_600_000  # Aff-Wild2 VA training frames (about)
VAL_FRAMES = 376_000  # Aff-Wild2 VA validation frames (about)
BACKBONES = ("r2plus1d_18", "r3d_18", "resnet18_gru", "i3d_tcn")
CONFIGS = {  # name: (head, recipe, audio dim, visual dim, head kwargs)
    "jca (CVPRW, L=8)": ("jca", "jca-cvpr", 512, 512, {}),
    "jca (L=16)": ("jca", "jca-journal", 512, 512, {}),
    "jca_tbiom (journal release)": ("jca_tbiom", "jca-journal", 512, 25088, {}),
    "jmt (paper, batch 2)": ("jmt", "jmt-paper", 512, 512, {}),
    "jmt (code, batch 64)": ("jmt", "jmt-code", 512, 512, {}),
}
# GPU projection: a fusion-head step launches a few hundred small kernels; at the sizes here
# each is latency-bound, so a step costs about KERNEL_US per launched op plus its FLOPs at
# GPU_TFLOPS (fp32, a realistic fraction of an A100/H100's peak for small matrices)
KERNEL_US = 10.0
GPU_TFLOPS = 15.0
LOADER_WORKERS = 4  # data loader processes assumed beside the GPU


def idle_cores() -> int:
    """Cores not already busy (1-minute load average), at least 1: on a shared machine a thread
    pool larger than the idle cores is several times slower than a small one."""
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - busy))


def timed(function, repeat: int = 3) -> float:
    """Median seconds of ``function()`` over ``repeat`` calls after one warm-up."""
    function()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- extraction -------------------------------------------------------------------------------


def sample_dataset(root: Path, frames: int = 64) -> Source:
    """The sample clip (a person talking) with a speech-like track, and its frames as crops."""
    import av
    from PIL import Image

    from avemo.files import sample_video

    with av.open(str(sample_video())) as container:
        images = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)][:frames]
    crops = root / "crops" / "talk"
    crops.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image).resize((112, 112)).save(crops / f"{i + 1:05d}.jpg")
    video = root / "talk.mp4"
    rate, seconds = 48_000, len(images) * 1001 / 30000
    t = np.arange(int(rate * seconds)) / rate
    voice = 0.3 * np.sin(2 * np.pi * 150 * t) * np.clip(np.sin(2 * np.pi * 4 * t), 0, None)
    with av.open(str(video), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(30000, 1001))
        stream.height, stream.width = images[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        sound = out.add_stream("aac", rate=rate, layout="mono")
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        size = sound.codec_context.frame_size or 1024
        for start in range(0, len(t), size):
            block = voice[start : start + size].astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(block, "fltp", "mono")
            frame.sample_rate, frame.pts = rate, start
            out.mux(sound.encode(frame))
        out.mux(sound.encode())
    return Source("talk", video, crops)


def make_clips(crops: Path, prep: dict, indices: np.ndarray) -> torch.Tensor:
    """Normalised clips ``B x 3 x 8 x S x S`` of the given frame indices (-1: black)."""
    reader = CropReader(crops, int(prep["size"][0]))
    black = np.zeros((reader.size, reader.size, 3), np.uint8)
    clips = np.stack([[reader(i) if i >= 0 else black for i in row] for row in indices])
    return normalise_clips(torch.from_numpy(clips).permute(0, 4, 1, 2, 3), prep)


def bench_extraction(backbones: list[str], device: torch.device) -> None:
    from avemo.clips import clip_frames
    from avemo.decode import iter_frames, load_audio, probe
    from avemo.spectrogram import SAMPLE_RATE, LogMel, clip_waveforms

    root = Path(tempfile.mkdtemp(prefix="avemo-bench-"))
    try:
        source = sample_dataset(root)
        info = probe(source.video)
        n = info.num_frames
        decode_s = timed(lambda: [f.time for f in iter_frames(source.video, info=info)], 2)
        times = np.array([f.time for f in iter_frames(source.video, info=info)])
        n = len(times)
        present = np.ones(n, bool)
        ends = np.arange(n - 8, n)
        indices = np.stack([clip_frames(int(e), present) for e in ends])
        audio = load_audio(source.video, SAMPLE_RATE, info=info)
        logmel = LogMel().to(device)
        audio_net = models.build("audio_resnet18").eval().to(device)
        all_ends = np.arange(n)

        def audio_path():
            with torch.inference_mode():
                for start in range(0, n, 32):
                    chunk = all_ends[start : start + 32]
                    waves = torch.from_numpy(clip_waveforms(audio, times, chunk, info.fps))
                    audio_net(logmel(waves.to(device)))

        audio_rate = n / timed(audio_path, 2)
        print(f"extraction stages on {device} ({torch.get_num_threads()} threads), clips/s:")
        print(f"  decode frame times            {n / decode_s:10.1f}")
        print(f"  audio (window, log-mel, ResNet18, batch 32) {audio_rate:8.1f}")
        print(f"{'visual backbone':<18}{'clip assembly':>15}{'backbone':>10}{'extraction':>12}"
              f"{'Aff-Wild2 days':>16}")  # fmt: skip
        for name in backbones:
            net = models.build(name).eval().to(device)
            prep = net.avemo_config["preprocessing"]

            def assemble(prep=prep):
                return make_clips(source.crops, prep, indices)

            assemble_rate = len(ends) / timed(assemble, 2)
            clips = assemble().to(device)
            with torch.inference_mode():
                backbone_rate = len(ends) / timed(lambda net=net, clips=clips: net(clips), 2)
            total = 1 / (
                1 / (n / decode_s) + 1 / assemble_rate + 1 / backbone_rate + 1 / audio_rate
            )
            days = (TRAIN_FRAMES + VAL_FRAMES) / total / 86400
            print(f"{name:<18}{assemble_rate:15.1f}{backbone_rate:10.2f}{total:12.2f}{days:16.1f}")
        # one real run of the whole path (R(2+1)D-18) to check the combined estimate
        visual = models.build("r2plus1d_18").eval().to(device)
        description = {"visual": {"preprocessing": visual.avemo_config["preprocessing"]}}
        engine = FeatureEngine(Backbones(visual, audio_net, description), device=device)
        start = time.perf_counter()
        extract_video(source, engine, progress=False)
        print(f"extract_video, r2plus1d_18, {n} clips: {n / (time.perf_counter() - start):.2f} "
              "clips/s end to end")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- training ---------------------------------------------------------------------------------


def synthetic_cache(root: Path, audio_dim: int, visual_dim: int, frames: int) -> list[Video]:
    """Videos of random features (memory-mapped from disk, like a real cache) and labels."""
    rng = np.random.default_rng(0)
    videos, per_video = [], 4096
    for i in range(math.ceil(frames / per_video)):
        n = min(per_video, frames - i * per_video)
        path = root / f"{audio_dim}x{visual_dim}" / f"v{i}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_features(
            path,
            Features(
                f"v{i}",
                audio=rng.standard_normal((n, audio_dim), dtype=np.float32),
                visual=rng.standard_normal((n, visual_dim), dtype=np.float32),
                frame=np.arange(1, n + 1),
                face=np.ones(n, bool),
            ),
        )
        labels = np.tanh(np.cumsum(rng.normal(0, 0.05, (n, 2)), 0)).astype(np.float32)
        videos.append(Video(read_features(path), labels))
    return videos


def count_ops(model, rules, batch) -> tuple[int, float]:
    """Aten ops launched and FLOPs of one training step (forward, backward, optimiser)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    class Count(TorchDispatchMode):
        ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.ops += 1
            return func(*args, **(kwargs or {}))

    optimizer = T.make_optimizer(model, rules)
    flops = FlopCounterMode(display=False)
    with Count(), flops:
        step(model, optimizer, batch)
    return Count.ops, flops.get_total_flops()


def step(model, optimizer, batch) -> float:
    audio, visual, target, mask = batch
    loss = T.ccc_loss(model(audio, visual), target, mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def bench_training(configs: list[str], steps: int, device: torch.device) -> None:
    root = Path(tempfile.mkdtemp(prefix="avemo-bench-"))
    try:
        print(f"training on {device} ({torch.get_num_threads()} threads); Aff-Wild2: "
              f"{TRAIN_FRAMES:,} training frames, {VAL_FRAMES:,} validation frames")  # fmt: skip
        header = (f"{'config':<29}{'params':>8}{'batch':>6}{'load s':>8}{'step s':>8}"
                  f"{'steps/ep':>9}{'val s':>8}{'epoch h':>9}{'ep/hour':>9}"
                  f"{'GPU step ms':>12}{'GPU epoch min':>14}")  # fmt: skip
        print(header)
        for name in configs:
            head, recipe_name, da, dv, kwargs = CONFIGS[name]
            rules = T.recipe(recipe_name)
            frames = max(rules.batch_size * rules.seq_len * (steps + 1), 4096)
            if dv > 4096:  # 25088-d visual rows: keep the subset on disk small
                frames = rules.batch_size * rules.seq_len * (steps + 1)
            videos = synthetic_cache(root, da, dv, frames)
            dataset = SequenceDataset(videos, rules.seq_len)
            torch.manual_seed(0)
            model = T.build_head(head, da, dv, rules.seq_len, **kwargs).to(device).train()
            optimizer = T.make_optimizer(model, rules)
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=rules.batch_size, shuffle=True,
                generator=torch.Generator().manual_seed(0),
            )  # fmt: skip
            batches = iter(loader)
            load, compute = [], []
            for _ in range(steps + 1):
                tick = time.perf_counter()
                batch = [x.to(device) for x in next(batches)]
                tock = time.perf_counter()
                step(model, optimizer, batch)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                load.append(tock - tick)
                compute.append(time.perf_counter() - tock)
            load_s, compute_s = statistics.median(load[1:]), statistics.median(compute[1:])
            ops, flops = count_ops(model, rules, batch)
            # validation: dense prediction throughput on one cached video
            tick = time.perf_counter()
            predict_video(model, videos[0].features, rules.seq_len, device=device)
            val_rate = len(videos[0].features.frame) / (time.perf_counter() - tick)
            steps_per_epoch = math.ceil(TRAIN_FRAMES / rules.seq_len / rules.batch_size)
            val_s = VAL_FRAMES / val_rate
            epoch_s = steps_per_epoch * (load_s + compute_s) + val_s
            gpu_step = max(ops * KERNEL_US * 1e-6 + flops / (GPU_TFLOPS * 1e12),
                           load_s / LOADER_WORKERS)  # fmt: skip
            # validation on the GPU: forward only, about a third of a training step per batch
            gpu_val = math.ceil(VAL_FRAMES / rules.seq_len / VALIDATION_BATCH) * gpu_step / 3
            gpu_epoch = steps_per_epoch * gpu_step + gpu_val
            params = sum(p.numel() for p in model.parameters())
            print(f"{name:<29}{params / 1e6:7.2f}M{rules.batch_size:6d}{load_s:8.3f}"
                  f"{compute_s:8.3f}{steps_per_epoch:9d}{val_s:8.0f}{epoch_s / 3600:9.2f}"
                  f"{3600 / epoch_s:9.2f}{gpu_step * 1e3:12.1f}{gpu_epoch / 60:14.1f}")  # fmt: skip
            shutil.rmtree(root / f"{da}x{dv}", ignore_errors=True)
        print(
            f"GPU step = max(aten ops x {KERNEL_US:g} us launch/latency + FLOPs at "
            f"{GPU_TFLOPS:g} TFLOP/s fp32, CPU batch loading / {LOADER_WORKERS} workers); "
            "validation forward-only at a third of a step per batch. An assumption, not a "
            "measurement: no GPU here."
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("extract", "train", "all"), default="all")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per config")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: idle)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads or idle_cores())
    device = torch.device(args.device)
    if args.part in ("extract", "all"):
        bench_extraction(args.backbones, device)
    if args.part in ("train", "all"):
        bench_training(args.configs, args.steps, device)


if __name__ == "__main__":
    main()
