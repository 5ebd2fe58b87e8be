"""`avemo faces`: batch rules (outputs, errors, skip/overwrite, atomic writes), crops, usage."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pandas as pd
import pytest
from typer.testing import CliRunner

from avemo.cli import app
from avemo.face.scan import TABLE_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--detect-every", "4", "--no-progress"]  # detection quality is not the point here


def run(*args: str):
    return CliRunner().invoke(app, ["faces", *map(str, args)])


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.fixture
def videos(tmp_path, carphone, no_audio_clip) -> Path:
    """in/a/carphone_pristine.mp4 and in/b/c/no_audio.mp4."""
    root = tmp_path / "in"
    (root / "a").mkdir(parents=True)
    (root / "b" / "c").mkdir(parents=True)
    shutil.copy(carphone, root / "a" / carphone.name)
    shutil.copy(no_audio_clip, root / "b" / "c" / no_audio_clip.name)
    (root / "b" / "notes.txt").write_text("not a video")
    return root


def test_folder_input_maps_to_output_tree(videos, tmp_path):
    out = tmp_path / "out"
    result = run(videos, "-o", out, *FAST)
    assert result.exit_code == 0, result.stderr
    table = pd.read_csv(out / "a" / "carphone_pristine.faces.csv")
    assert list(table.columns) == TABLE_COLUMNS
    assert len(table) == 120 and table["success"].mean() >= 0.95
    assert set(table["face_id"]) == {0}
    empty = pd.read_csv(out / "b" / "c" / "no_audio.faces.csv")
    assert len(empty) == 30 and set(empty["face_id"]) == {-1} and not empty["success"].any()
    assert empty["confidence"].isna().all()
    assert "NaN" in (out / "b" / "c" / "no_audio.faces.csv").read_text()
    assert "2 videos done, 0 skipped" in result.stderr
    assert sorted(p.name for p in out.rglob("*")) == sorted(
        ["a", "b", "c", "carphone_pristine.faces.csv", "no_audio.faces.csv"]
    )


def test_bad_files_fail_alone(tmp_path, carphone, bad_files):
    out = tmp_path / "out"
    missing = tmp_path / "missing.mp4"
    result = run(carphone, *bad_files, missing, "-o", out, *FAST)
    assert result.exit_code == 1
    errors = error_lines(result.stderr)
    assert len(errors) == len(bad_files) + 1
    for path, line in zip([*bad_files, missing], errors, strict=True):
        assert str(path) in line
    assert "Traceback" not in result.stderr + result.stdout
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert len(pd.read_csv(out / "carphone_pristine.faces.csv")) == 120
    assert sorted(p.name for p in out.iterdir()) == ["carphone_pristine.faces.csv"]
    assert f"1 videos done, 0 skipped (output exists), {len(bad_files) + 1} failed" in result.stderr


def test_skip_existing_unless_overwrite(tmp_path, no_audio_clip):
    out = tmp_path / "out"
    csv = out / "no_audio.faces.csv"
    assert run(no_audio_clip, "-o", out, *FAST).exit_code == 0
    csv.write_text("kept\n")
    result = run(no_audio_clip, "-o", out, *FAST)
    assert result.exit_code == 0 and "0 videos done, 1 skipped" in result.stderr
    assert csv.read_text() == "kept\n"
    result = run(no_audio_clip, "-o", out, "--overwrite", *FAST)
    assert result.exit_code == 0 and "1 videos done, 0 skipped" in result.stderr
    assert len(pd.read_csv(csv)) == 30


def test_interrupted_write_leaves_no_partial_csv(tmp_path, no_audio_clip, monkeypatch):
    out = tmp_path / "out"

    def half_then_fail(self, path, *args, **kwargs):
        Path(path).write_text("frame,timestamp\n0,0.0\n")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_fail)
    result = run(no_audio_clip, "-o", out, *FAST)
    assert result.exit_code == 1
    assert error_lines(result.stderr) == [f"error: {no_audio_clip}: OSError: disk full"]
    assert list(out.iterdir()) == []  # neither the CSV nor a temporary file


def test_save_crops(tmp_path, carphone):
    out = tmp_path / "out"
    result = run(carphone, "-o", out, "--save-crops", "--crop-size", "224", *FAST)
    assert result.exit_code == 0, result.stderr
    table = pd.read_csv(out / "carphone_pristine.faces.csv")
    crops = sorted((out / "carphone_pristine").iterdir())
    assert [p.name for p in crops] == [
        f"{frame + 1:05d}.jpg" for frame in table.loc[table["success"] == 1, "frame"]
    ]
    assert cv2.imread(str(crops[0])).shape == (224, 224, 3)
    # the crops folder is an output too: without it the video is done again
    shutil.rmtree(out / "carphone_pristine")
    result = run(carphone, "-o", out, "--save-crops", *FAST)
    assert "1 videos done, 0 skipped" in result.stderr
    assert cv2.imread(str(crops[0])).shape == (112, 112, 3)


def test_save_crops_into_a_folder_avemo_did_not_write(tmp_path, carphone):
    """An existing OUT/<stem>/ is an output like any other: skipped without --overwrite; with
    it only avemo's own %05d.jpg crops are replaced, never the user's files."""
    out = tmp_path / "out"
    folder = out / "carphone_pristine"
    (folder / "notes").mkdir(parents=True)
    (folder / "notes" / "keep.txt").write_text("the user's")
    (folder / "README.txt").write_text("the user's too")
    (folder / "99999.jpg").write_bytes(b"an old crop of a frame that has none now")
    result = run(carphone, "-o", out, "--save-crops", *FAST)
    assert result.exit_code == 0, result.stderr
    assert (out / "carphone_pristine.faces.csv").is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["99999.jpg", "README.txt", "notes"]
    result = run(carphone, "-o", out, "--save-crops", "--overwrite", *FAST)
    assert result.exit_code == 0, result.stderr
    names = sorted(p.name for p in folder.iterdir())
    assert "README.txt" in names and "notes" in names and "99999.jpg" not in names
    assert (folder / "notes" / "keep.txt").read_text() == "the user's"
    assert (folder / "README.txt").read_text() == "the user's too"
    crops = [n for n in names if n.endswith(".jpg")]
    assert len(crops) > 100 and cv2.imread(str(folder / crops[0])).shape == (112, 112, 3)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no parts left


@pytest.mark.parametrize(
    "args, message",
    [
        (["--crop-size", "100"], "112, 224"),
        (["--detector", "scrfd"], "--detector-model"),
        (["--detector", "scrfd", "--detector-model", "nowhere/det_10g.onnx"], "not found"),
        (["--detector", "yolo"], "unknown detector"),
        (["--device", "tpu"], "unknown device"),
        (["--max-faces", "0"], "max-faces"),
    ],
)
def test_usage_errors_exit_2(tmp_path, carphone, args, message):
    result = run(carphone, "-o", tmp_path / "out", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_no_videos_in_folder_is_a_usage_error(tmp_path):
    (tmp_path / "in").mkdir()
    result = run(tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "no video files" in result.stderr


def test_quick_start_command_line(tmp_path, garbage_file):
    """The README's `avemo faces "$(avemo sample)" -o out && head -3 ...`, as a process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "avemo"]
    sample = subprocess.run(
        [*command, "sample"], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    done = subprocess.run(
        [*command, "faces", sample, garbage_file, "-o", "out", "--detect-every", "4"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert error_lines(done.stderr) == [error_lines(done.stderr)[0]]
    assert str(garbage_file) in done.stderr and "Traceback" not in done.stderr
    head = (tmp_path / "out" / "carphone_pristine.faces.csv").read_text().splitlines()[:3]
    assert head[0] == ",".join(TABLE_COLUMNS)
    assert head[1].startswith("0,0,0,1,") and head[2].startswith("1,0.033367,0,1,")
