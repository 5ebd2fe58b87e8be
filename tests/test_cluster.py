"""Batches on Ray (avemo.cluster): a real two-node cluster on this machine (tests/raycluster.py).

The ``ray``-marked tests share one module-scoped cluster (select them with ``-m ray``); the
others check what needs no cluster: that nothing imports Ray without ``--ray``, and the options.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import raycluster

from avemo import cluster
from avemo.errors import AvemoError

ROOT = Path(__file__).resolve().parents[1]


def avemo(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "avemo", *args], capture_output=True, text=True, env=env, cwd=ROOT
    )


def errors(output: str) -> list[str]:
    return sorted(line for line in output.splitlines() if line.startswith("error:"))


def test_nothing_imports_ray_without_the_option(garbage_file, tmp_path):
    code = (
        "import sys\n"
        "import avemo.cli, avemo.extract\n"
        "from avemo.annotate import annotate_videos\n"
        "from avemo.faces import faces_videos\n"
        f"r = annotate_videos([{str(garbage_file)!r}], {str(tmp_path)!r}, progress=False)\n"
        "assert r.exit_code == 1, r\n"
        f"r = faces_videos([{str(garbage_file)!r}], {str(tmp_path)!r})\n"
        "assert r.exit_code == 1, r\n"
        "loaded = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_ray_options_need_ray_and_follow_the_device():
    with pytest.raises(AvemoError, match="need --ray"):
        cluster.executor(None, retries=2)
    assert cluster.executor(None) is None
    assert cluster.gpus_for("cpu", None, cluster_gpus=8) == 0
    assert cluster.gpus_for("cuda", None, cluster_gpus=8) == 1
    assert cluster.gpus_for("auto", None, cluster_gpus=8) == 1
    assert cluster.gpus_for("auto", None, cluster_gpus=0) == 0
    assert cluster.gpus_for("auto", 0.25, cluster_gpus=1) == 0.25
    for device, gpus in (("cuda:1", None), ("cpu", 0.5), ("cuda", 1.5)):
        with pytest.raises(AvemoError):
            cluster.gpus_for(device, gpus, cluster_gpus=4)


def test_cli_ray_options_without_ray_are_a_usage_error(carphone, tmp_path):
    from typer.testing import CliRunner

    from avemo.cli import app

    for command in ("annotate", "faces"):
        args = [command, str(carphone), "-o", str(tmp_path), "--retries", "2"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2
        assert result.output.strip().splitlines() == [
            "error: --gpus-per-video, --cpus-per-video and --retries need --ray"
        ]


# --- on a real cluster ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    """Two nodes of 1 CPU; this process is a driver too (token in its environment)."""
    started = raycluster.Cluster(worker_imports=("tiny",))
    saved = {key: os.environ.get(key) for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=started.env["RAY_AUTH_TOKEN"])
    try:
        yield started
    finally:
        try:
            import ray

            ray.shutdown()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            started.stop()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, carphone, av_clip, garbage_file, empty_file) -> Path:
    """Real clips (one with audio, one in a subfolder) and broken ones."""
    folder = tmp_path_factory.mktemp("ray-in")
    (folder / "sub").mkdir()
    for target, source in (
        ("a.mp4", carphone),
        ("b.mp4", av_clip),
        ("sub/c.mp4", carphone),
        ("garbage.mp4", garbage_file),
        ("empty.mp4", empty_file),
    ):
        (folder / target).write_bytes(source.read_bytes())
    return folder


GOOD = ("a", "b", "sub/c")


@pytest.fixture(scope="module")
def local_run(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("local-out")
    return out, avemo("annotate", str(folder), "-o", str(out), "--no-progress")


def same_outputs(out: Path, reference: Path) -> None:
    """Byte-identical CSVs, the same provenance but for timings and dates, nothing else."""
    for name in GOOD:
        assert (out / f"{name}.csv").read_bytes() == (reference / f"{name}.csv").read_bytes()
        ours, theirs = (json.loads((d / f"{name}.json").read_text()) for d in (out, reference))
        for record in (ours, theirs):
            del record["created"], record["elapsed_s"], record["stages_s"]
        assert ours == theirs
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(f"{name}{ext}" for name in GOOD for ext in (".csv", ".json"))


@pytest.mark.ray
def test_annotate_on_ray_is_the_local_run(ray_cluster, folder, local_run, tmp_path):
    reference, local = local_run
    assert local.returncode == 1
    out = tmp_path / "out"
    args = ["annotate", str(folder), "-o", str(out), "--no-progress", "--ray", ray_cluster.address]
    result = avemo(*args, env=ray_cluster.env)
    assert result.returncode == local.returncode, result.stderr
    assert errors(result.stderr) == errors(local.stderr) and len(errors(local.stderr)) == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("3 videos done, 0 skipped")
    same_outputs(out, reference)
    # a rerun finishes only what is missing
    for ext in (".csv", ".json"):
        (out / f"sub/c{ext}").unlink()
    again = avemo(*args, env=ray_cluster.env)
    assert again.returncode == 1
    assert again.stderr.splitlines()[-1].startswith("1 videos done, 2 skipped")
    same_outputs(out, reference)


@pytest.mark.ray
def test_a_killed_worker_loses_nothing_and_models_load_once_per_process(
    ray_cluster, folder, local_run, tmp_path, capsys
):
    from avemo.annotate import annotate_videos

    out = tmp_path / "out"
    killed = []

    def kill_one_mid_video():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if ray_cluster.workers("_run_job"):
                time.sleep(1.5)  # into the video: models loaded, frames decoding
                for pid in ray_cluster.workers("_run_job")[:1]:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.1)

    killer = threading.Thread(target=kill_one_mid_video)
    killer.start()
    try:
        result = annotate_videos([folder], out, progress=False, ray=ray_cluster.address)
    finally:
        killed.append(None)  # stops the killer if nothing ran
        killer.join()
    assert killed[0] is not None, "no worker was running a video to kill"
    local = local_run[1]
    assert result.exit_code == local.returncode
    assert errors(capsys.readouterr().err) == errors(local.stderr)
    assert len(result.done) == 3 and len(result.failed) == 2
    same_outputs(out, local_run[0])  # every good video once, nothing partial or temporary
    assert not list(out.rglob(".*"))
    # the model and the detector: loaded once in each worker process, not once per video
    assert killed[0] not in result.workers and 1 <= len(result.workers) <= 3
    for stats in result.workers.values():
        assert stats["model_loads"] == 1 and stats["detector_loads"] == 1


@pytest.mark.ray
def test_faces_on_ray_is_the_local_run(ray_cluster, folder, tmp_path):
    from avemo.faces import faces_videos

    here = faces_videos([folder], tmp_path / "here", detect_every=4)
    there = faces_videos([folder], tmp_path / "there", detect_every=4, ray=ray_cluster.address)
    assert [len(r.done) for r in (here, there)] == [3, 3]
    assert sorted(j.source for j, _ in here.failed) == sorted(j.source for j, _ in there.failed)
    for name in GOOD:
        csv = f"{name}.faces.csv"
        assert (tmp_path / "here" / csv).read_bytes() == (tmp_path / "there" / csv).read_bytes()


@pytest.mark.ray
def test_extract_on_ray_is_the_local_run(ray_cluster, folder, tmp_path):
    import numpy as np
    import tiny

    from avemo.cache import read_features
    from avemo.extract import extract

    trained = tiny.trained_pipeline(tmp_path / "tiny.safetensors")
    options = {"pipeline": trained, "device": "cpu", "progress": False, "detect_every": 4}
    here = extract([folder], None, tmp_path / "here", **options)
    there = extract([folder], None, tmp_path / "there", ray=ray_cluster.address, **options)
    assert [len(r.done) for r in (here, there)] == [3, 3]
    assert [len(r.failed) for r in (here, there)] == [2, 2]
    # a process that only met the broken files never returned its counts (its jobs raised)
    loaded = [w for w in there.workers.values() if "model_loads" in w]
    assert loaded and all(w["model_loads"] == 1 for w in loaded)
    for name in GOOD:
        ours, theirs = (read_features(tmp_path / d / f"{name}.npz") for d in ("here", "there"))
        assert ours.info == theirs.info
        for field in ("audio", "visual", "frame", "face"):
            assert np.array_equal(getattr(ours, field), getattr(theirs, field))
    assert (tmp_path / "here" / "cache.json").read_text() == (
        tmp_path / "there" / "cache.json"
    ).read_text()
