"""From an empty cache to the first annotated frame with a named pipeline, over a loopback server.

    python benchmarks/pipelines.py [--seconds 2] [--keep DIR]

Full-size synthetic files in the official layouts stand in for the published ones (random
weights, made by benchmarks/convert.py's writers): the TSAV release zip (``aff2model_tntsub4.zip``
holding ``model2/TSAV_Sub4_544k.pth.tar``, 4-channel stem) and the journal JCA
``jointcam_model.pt`` (released orig_cam layout), the latter behind Google Drive's large-file
confirmation page. A copy of the packaged manifest points ``tsav-affwild2-sub4`` and
``jca-journal`` at the loopback server (``$AVEMO_MANIFEST``); then, as a user would, in fresh
processes:

    avemo weights pull jca-journal-pipeline --trust
    avemo annotate face.mp4 -o out --model jca-journal-pipeline

Prints the seconds of each, the download and the import + assembly seconds recorded by the pull,
and the total from the empty cache to the written annotation (annotate writes a video's frames
together, so its first frame arrives with the file). Imports of published layouts are marked
trained (the published files are), so annotate runs these random weights: the numbers are
timings only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # tests/loopback.py: the loopback server

import loopback  # noqa: E402

from avemo import hub, models  # noqa: E402

PIPELINE = "jca-journal-pipeline"


def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"avemo_benchmark_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tsav_zip(folder: Path) -> Path:
    """The TSAV release as published: a zip holding model2/TSAV_Sub4_544k.pth.tar."""
    video = models.build("r2plus1d_18").state_dict()
    video["stem.0.weight"] = torch.randn(45, 4, 1, 7, 7)  # RGB + mask
    state = {f"video_model.r2plus1d.{k}": v for k, v in video.items()}
    audio = models.build("audio_resnet18").state_dict()
    state.update({f"audio_model.resnet.{k}": v for k, v in audio.items()})
    state.update({"fc.1.weight": torch.randn(17, 1024), "fc.1.bias": torch.randn(17)})
    inner = folder / "TSAV_Sub4_544k.pth.tar"
    torch.save({"epoch": 9, "state_dict": state}, inner, _use_new_zipfile_serialization=False)
    path = folder / "aff2model_tntsub4.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(inner, "model2/TSAV_Sub4_544k.pth.tar")
    inner.unlink()
    return path


def avemo(*args: str, env: dict) -> float:
    """Run the avemo CLI in a fresh process; its seconds."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "avemo", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the annotated clip")
    parser.add_argument("--keep", type=Path, help="work here instead of a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        files = {"tsav-affwild2-sub4": tsav_zip(folder),
                 "jca-journal": _benchmark("convert").journal_file(folder)}  # fmt: skip
        video = _benchmark("annotate").make_video(folder / "face.mp4", args.seconds)
        server, thread = loopback.start()
        try:
            manifest = json.loads(hub.MANIFEST_PATH.read_text())
            for entry in manifest["weights"]:
                if entry["name"] == "tsav-affwild2-sub4":
                    server.files["/aff2model_tntsub4.zip"] = files[entry["name"]].read_bytes()
                    entry["urls"] = [server.url("/aff2model_tntsub4.zip")]
                elif entry["name"] == "jca-journal":
                    entry["urls"] = [server.drive("1Jca", files[entry["name"]].read_bytes())]
            (folder / "manifest.json").write_text(json.dumps(manifest))
            cache = folder / "cache"
            env = {**os.environ, hub.MANIFEST_ENV: str(folder / "manifest.json"),
                   "AVEMO_HOME": str(cache)}  # fmt: skip
            sizes = {name: path.stat().st_size / 2**20 for name, path in files.items()}
            print(f"components: {json.dumps({k: f'{v:.0f} MiB' for k, v in sizes.items()})}")
            pull = avemo("weights", "pull", PIPELINE, "--trust", env=env)
            out = folder / "out"
            annotate = avemo("annotate", str(video), "-o", str(out), "--model", PIPELINE,
                             "--no-progress", env=env)  # fmt: skip
        finally:
            loopback.stop(server, thread)
        os.environ["AVEMO_HOME"] = str(cache)
        assembly = hub.load_state()[PIPELINE]["seconds"]
        size = (cache / "pipelines" / PIPELINE / f"{PIPELINE}.safetensors").stat().st_size
        record = json.loads((out / "face.json").read_text())
        print(f"pull (download + verify + import + assemble, fresh process): {pull:.1f} s")
        print(f"  import + assembly (recorded by the pull): {assembly:.1f} s, "
              f"pipeline {size / 2**20:.0f} MiB")  # fmt: skip
        print(f"annotate {args.seconds:g} s of 640x480 30 fps (fresh process): {annotate:.1f} s; "
              f"stages (s) {record['stages_s']}")  # fmt: skip
        print(f"empty cache -> first annotated frame: {pull + annotate:.1f} s")


if __name__ == "__main__":
    main()
