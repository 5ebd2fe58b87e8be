"""deploy/rayjob.yaml, checked offline: a KubeRay RayJob whose pods run the Dockerfile's image,
share one volume, ask for the GPUs the entrypoint uses, and whose entrypoint is a valid
``avemo`` command line with ``--ray auto``."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from avemo import __version__

ROOT = Path(__file__).resolve().parents[1]


def manifest() -> dict:
    return yaml.safe_load((ROOT / "deploy" / "rayjob.yaml").read_text())


def pods(job: dict) -> list[dict]:
    spec = job["spec"]["rayClusterSpec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [group["template"]["spec"] for group in groups]


def test_rayjob_has_the_kuberay_structure():
    job = manifest()
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["metadata"]["name"]
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    head = spec["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # the head only schedules
    for group in spec["rayClusterSpec"]["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        for key, value in group["rayStartParams"].items():
            assert isinstance(key, str) and isinstance(value, str)  # KubeRay wants strings


def test_every_pod_runs_the_image_and_mounts_the_same_volume():
    built = re.search(r"docker build -t (\S+) \.", (ROOT / "Dockerfile").read_text())
    assert built, "the Dockerfile says how it is built"
    for pod in pods(manifest()):
        (container,) = pod["containers"]
        repository, _, tag = container["image"].rpartition(":")
        assert repository.rsplit("/", 1)[-1] == built.group(1) and tag == __version__
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert claims == {"data": "avemo-data"} and mounts == {"data": "/data"}


def test_entrypoint_is_a_valid_avemo_command_that_fits_the_workers():
    import typer

    from avemo.cli import app

    job = manifest()
    args = shlex.split(job["spec"]["entrypoint"])
    assert args[0] == "avemo"
    command = typer.main.get_command(app)
    with command.make_context("avemo", args[1:], resilient_parsing=False) as context:
        name, sub, rest = command.resolve_command(context, args[1:])
        params = sub.make_context(name, rest, parent=context).params
    assert params["ray"] == "auto"
    assert str(params["output"]).startswith("/data/") and all(
        str(p).startswith("/data/") for p in params["inputs"]
    )
    for group in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        gpus, cpus = int(limits["nvidia.com/gpu"]), float(group["rayStartParams"]["num-cpus"])
        assert int(group["rayStartParams"]["num-gpus"]) == gpus >= 1
        assert 0 < params["gpus_per_video"] <= gpus and params["cpus_per_video"] <= cpus
        assert float(limits["cpu"]) >= cpus
