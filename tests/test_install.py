"""The GPU install (Dockerfile and README) ends with exactly one onnxruntime: the GPU build.

``onnxruntime`` (a base dependency) and ``onnxruntime-gpu`` install the same module, so an
install with both leaves whichever came last, and the CPU build only lists the Azure and CPU
providers: face detection would silently run on the CPU. This replays the Dockerfile's pip
commands in a fresh venv and checks what is left. Cheap as it can be while honest: the first
command (everything) is resolved by pip exactly as written (``--dry-run --report``), and of what
it resolves only the onnxruntime distributions and their dependencies are really installed (the
rest, torch's 3 GB included, does not touch the ``onnxruntime`` module); the next commands run
word for word. The CUDA libraries the provider links come from torch's wheels at the pinned
versions (the dev venv has them, as the image does), found through the Dockerfile's own
LD_LIBRARY_PATH.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGE_VENV = "/opt/avemo"  # the Dockerfile's venv
DRIVER_LIBRARIES = {"libcuda.so.1"}  # the host's driver: added by `docker run --gpus all`


def dockerfile_text() -> str:
    return (ROOT / "Dockerfile").read_text().replace("\\\n", " ")


def dockerfile_pip_commands() -> list[list[str]]:
    runs = [line for line in dockerfile_text().splitlines() if line.startswith("RUN pip ")]
    assert len(runs) == 1, "one RUN installs avemo"
    return [shlex.split(part) for part in runs[0][len("RUN ") :].split("&&")]


def readme_gpu_commands() -> list[list[str]]:
    section = (ROOT / "README.md").read_text().split("\n## GPUs", 1)[1].split("\n## ", 1)[0]
    blocks = [b for b in re.findall(r"```bash\n(.+?)\n```", section, flags=re.S) if "gpu" in b]
    return [shlex.split(part) for part in blocks[0].split("&&")]


def test_readme_gpu_install_is_the_dockerfile_install():
    docker, readme = dockerfile_pip_commands(), readme_gpu_commands()
    assert docker[1:] == readme[1:]  # remove both builds, then the GPU build alone
    assert docker[-1][-1] == readme[-1][-1] == "onnxruntime-gpu"
    for first in (docker[0], readme[0]):
        assert first[:4] == ["pip", "install", "-c", "constraints.txt"]
        assert re.fullmatch(r"\.\[(\w+,)*gpu(,\w+)*\]", first[-1])
    assert "ray" in docker[0][-1]  # the image can join a Ray cluster


def image_library_path() -> list[Path]:
    """The Dockerfile's LD_LIBRARY_PATH, with its venv's site-packages mapped onto ours."""
    found = re.search(r"LD_LIBRARY_PATH=(\S+)", dockerfile_text())
    assert found, "the Dockerfile sets LD_LIBRARY_PATH for the wheels' CUDA libraries"
    here = Path(sysconfig.get_paths()["purelib"])
    image = f"{IMAGE_VENV}/lib/python3.11/site-packages"
    paths = found.group(1).split(":")
    assert all(p.startswith(image) for p in paths)
    return [here / p[len(image) + 1 :] for p in paths]


@pytest.mark.install
def test_dockerfile_install_leaves_only_the_gpu_onnxruntime_with_its_libraries(tmp_path):
    steps = dockerfile_pip_commands()
    # 1. what the first command installs, resolved as written (nothing else installed)
    report = tmp_path / "report.json"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, *steps[0][1:], "--dry-run", "--ignore-installed", "--quiet", "--report", report],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    resolved = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    both = {"onnxruntime", "onnxruntime-gpu"}
    assert both <= set(resolved)  # the clash the next commands resolve
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run(
        ["pip", "install", "--quiet", "-c", "constraints.txt",
         *(f"{name}=={resolved[name]}" for name in sorted(both))],
        cwd=ROOT, env=env, check=True, capture_output=True,
    )  # fmt: skip
    # 2. the rest word for word
    for step in steps[1:]:
        done = subprocess.run(step, cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    listed = subprocess.run(
        ["pip", "list", "--format=json"], env=env, check=True, capture_output=True, text=True
    )
    names = {item["name"].lower() for item in json.loads(listed.stdout)}
    assert "onnxruntime-gpu" in names and "onnxruntime" not in names
    python = str(venv / "bin" / "python")
    code = "import onnxruntime as o; print(o.__file__); print(o.get_available_providers())"
    out = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True)
    module, providers = out.stdout.splitlines()
    assert "CUDAExecutionProvider" in providers, providers
    # 3. every library the CUDA provider links is found (but the driver, from the host)
    provider = Path(module).parent / "capi" / "libonnxruntime_providers_cuda.so"
    library_path = image_library_path()
    assert all(p.is_dir() for p in library_path), library_path
    ldd = subprocess.run(
        ["ldd", str(provider)],
        env={"LD_LIBRARY_PATH": ":".join(map(str, library_path))},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    missing = {line.split()[0] for line in ldd.stdout.splitlines() if "not found" in line}
    assert missing <= DRIVER_LIBRARIES, ldd.stdout
    needed = {line.split()[0] for line in ldd.stdout.splitlines() if "=>" in line}
    assert {"libcudart.so.13", "libcublasLt.so.13", "libcublas.so.13"} <= needed
    # cuDNN is opened at run time (dlopen), not linked: it must be on the same path
    assert any((p / "libcudnn.so.9").exists() for p in library_path)
