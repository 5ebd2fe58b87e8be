"""avemo annotate: rows per frame, NaN rules, models (default, tiny trained pipeline, refusals),
stride, provenance, output files and the batch rules."""

from __future__ import annotations

import importlib
import json
import math

import av
import numpy as np
import pandas as pd
import pytest
import tiny  # tests/tiny.py: small registered backbones
import torch
from typer.testing import CliRunner

from avemo import models
from avemo.annotate import COLUMNS, annotate, annotate_file, resolve_model
from avemo.cli import app
from avemo.decode import iter_frames
from avemo.errors import AvemoError

annotate_module = importlib.import_module("avemo.annotate")
SEQ_LEN = tiny.SEQ_LEN
tiny_pipeline = tiny.tiny_pipeline


@pytest.fixture(scope="module")
def trained_pipeline(tmp_path_factory):
    """A tiny pipeline trained by this fixture for a few steps on synthetic data (CCC loss)."""
    return tiny.trained_pipeline(tmp_path_factory.mktemp("models") / "tiny.safetensors")


@pytest.fixture(scope="module")
def untrained_pipeline(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "untrained.safetensors"
    models.save(tiny_pipeline(), path, provenance={"trained": False})
    return path


def decoded_frames(path) -> int:
    return sum(1 for _ in iter_frames(path))


def check_table(table: pd.DataFrame, frames: int) -> None:
    assert list(table.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert len(table) == frames
    assert table["frame"].tolist() == list(range(frames))
    for column in ("valence", "arousal", "valence_raw", "arousal_raw"):
        values = table[column].dropna()
        assert ((values >= -1) & (values <= 1)).all(), column
    # no face in a frame: no box; never a zero standing in for a missing value
    absent = table["success"] == 0
    assert table.loc[absent, "face_x"].isna().all()


def test_default_model_on_a_real_clip(carphone):
    table = annotate(carphone)
    check_table(table, decoded_frames(carphone))
    assert table["success"].mean() >= 0.95
    assert table["valence"].notna().sum() == table["success"].sum()
    assert np.isclose(table.filter(like="p_").sum(axis=1).dropna(), 1, atol=1e-4).all()
    record = table.attrs["avemo"]
    assert record["model"]["name"] == "fer-mini-xception"
    assert record["model"]["provenance"]["trained"] is True
    assert record["input"]["frames"] == len(table)
    # reliability: carphone has no audio (voice 0, and the record says why); no fusion head
    assert (table["voice"] == 0).all() and table["audio_share"].isna().all()
    assert not record["voice"]["audio"] and "no audio stream" in record["voice"]["note"]
    assert table.loc[table["success"] == 1, "face_frontal"].median() > 0.7
    (face,) = record["summary"]
    assert face["frames"] == len(table) and face["face_share"] == table["success"].mean()
    quadrants = [face[f"share_{q}"] for q in ("positive_high", "negative_high", "negative_low")]
    assert sum(quadrants) + face["share_positive_low"] == pytest.approx(1.0)
    assert face["valence_q05"] <= face["valence_q50"] <= face["valence_q95"]


@pytest.mark.parametrize(
    "clip",
    [
        "av_clip",
        "offset_audio_clip",
        "gap_audio_clip",
        "vfr_clip",
        "rotated_clip",
        "no_audio_clip",
        "truncated_clip",
    ],
)
def test_one_row_per_decoded_frame_for_every_fixture(clip, request, trained_pipeline):
    path = request.getfixturevalue(clip)
    frames = decoded_frames(path)
    for model in (None, trained_pipeline):
        table = annotate(path, model=model, stride=4)
        check_table(table, frames)
        assert np.allclose(table["timestamp"], [f.time for f in iter_frames(path)])


def test_tiny_pipeline_runs_end_to_end_and_strides_agree(carphone, trained_pipeline):
    dense = annotate(carphone, model=trained_pipeline, stride=1, smooth=False)
    default = annotate(carphone, model=trained_pipeline, smooth=False)
    frames = decoded_frames(carphone)
    check_table(dense, frames)
    check_table(default, frames)
    stride = default.attrs["avemo"]["settings"]["stride"]
    assert stride == annotate_module.DEFAULT_STRIDE["pipeline"]
    automatic = annotate_module.default_bf16("pipeline", torch.device("cpu"))
    assert default.attrs["avemo"]["settings"]["bf16"] == automatic
    assert annotate_module.default_bf16("expression", torch.device("cpu")) is False
    # dense tiling puts the clip ending at a grid frame in the same sequence at every stride
    grid = np.arange(0, frames, stride)
    a = dense.loc[grid, ["valence", "arousal"]].to_numpy()
    b = default.loc[grid, ["valence", "arousal"]].to_numpy()
    assert np.isfinite(a).all()
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.nanstd(dense["valence"]) > 0  # a real prediction, not a constant


def test_frames_without_a_face_window_get_nan(tmp_path, trained_pipeline):
    """A clip that starts with 40 black frames, then the real face."""
    from avemo.files import sample_video

    path = tmp_path / "late_face.mp4"
    faces = [f.image for f in iter_frames(sample_video())][:40]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 176, 144, "yuv420p"
        for image in [np.zeros_like(faces[0])] * 40 + faces:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    table = annotate(path, model=trained_pipeline, stride=1)
    check_table(table, 80)
    first_face = int(table.index[table["success"] == 1][0])
    assert 38 <= first_face <= 42
    assert table.loc[: first_face - 1, "valence_raw"].isna().all()
    assert table.loc[first_face:, "valence_raw"].notna().all()
    default = annotate(path)  # the per-frame model: NaN exactly where there is no face
    assert (default["valence"].notna() == (default["success"] == 1)).all()


def test_untrained_and_partial_models_are_refused(untrained_pipeline, tmp_path, carphone):
    with pytest.raises(AvemoError, match="untrained"):
        resolve_model(untrained_pipeline)
    head = tmp_path / "head.safetensors"
    models.save(models.build("jca"), head, provenance={"trained": True, "source": "tests"})
    with pytest.raises(AvemoError, match="not a whole model"):
        resolve_model(head)
    result = CliRunner().invoke(
        app, ["annotate", str(carphone), "-o", str(tmp_path / "out"), "-m", str(untrained_pipeline)]
    )
    assert result.exit_code == 2
    assert "untrained" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_bad_stride_is_a_usage_error(carphone, tmp_path):
    with pytest.raises(AvemoError, match="divide 32"):
        annotate(carphone, stride=3)


def test_provenance_file_is_complete(carphone, tmp_path):
    stem = tmp_path / "carphone"
    annotate_file(carphone, stem)
    table = pd.read_csv(tmp_path / "carphone.csv")
    record = json.loads((tmp_path / "carphone.json").read_text())
    assert len(table) == record["input"]["frames"]
    for key in ("avemo_version", "model", "settings", "input", "elapsed_s", "stages_s", "created"):
        assert key in record
    assert len(record["model"]["sha256"]) == 64
    assert len(record["input"]["sha256"]) == 64
    for key in ("size", "frames", "fps", "duration", "width", "height"):
        assert record["input"][key] > 0
    assert math.isclose(record["input"]["fps"], 30000 / 1001, rel_tol=1e-3)
    assert {"stride", "smooth", "device", "batch_size", "detector", "max_faces", "format"} <= set(
        record["settings"]
    )
    assert record["elapsed_s"] > 0 and "write" in record["stages_s"]


def test_abaw_format(carphone, tmp_path):
    annotate_file(carphone, tmp_path / "carphone", fmt="abaw")
    lines = (tmp_path / "carphone.txt").read_text().splitlines()
    assert lines[0] == "image_location,valence,arousal"
    assert lines[1].startswith("carphone/00001.jpg,")
    assert len(lines) == 1 + decoded_frames(carphone)
    values = np.array([[float(v) for v in line.split(",")[1:]] for line in lines[1:]])
    assert np.isfinite(values).all() and (np.abs(values) <= 1).all()


def test_cli_batch_bad_files_and_rerun(carphone, bad_files, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "carphone.mp4").write_bytes(carphone.read_bytes())
    for bad in bad_files:
        (inputs / bad.name).write_bytes(bad.read_bytes())
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["annotate", str(inputs), "-o", str(out), "--no-progress"])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == len(bad_files)
    assert "Traceback" not in result.output
    assert (out / "carphone.csv").exists() and (out / "carphone.json").exists()
    assert not list(out.rglob("*.part"))
    before = (out / "carphone.csv").stat().st_mtime_ns
    again = CliRunner().invoke(app, ["annotate", str(inputs / "carphone.mp4"), "-o", str(out)])
    assert again.exit_code == 0 and "1 skipped" in again.output
    assert (out / "carphone.csv").stat().st_mtime_ns == before


def test_interrupted_run_leaves_no_partial_output_and_rerun_completes(
    carphone, tmp_path, monkeypatch
):
    from avemo import writers

    out = tmp_path / "out"
    original = writers.DelimitedWriter.write_to

    def interrupted(self, table, path):
        path.write_text("frame,timestamp\n0,0.0\n")  # half-written
        raise KeyboardInterrupt

    monkeypatch.setattr(writers.DelimitedWriter, "write_to", interrupted)
    with pytest.raises(KeyboardInterrupt):
        annotate_module.annotate_videos([carphone], out, progress=False)
    assert not (out / "carphone_pristine.csv").exists()
    assert not list(out.rglob("*.part")) and not list(out.rglob(".*"))
    monkeypatch.setattr(writers.DelimitedWriter, "write_to", original)
    result = annotate_module.annotate_videos([carphone], out, progress=False)
    assert result.exit_code == 0 and len(result.done) == 1
    assert len(pd.read_csv(out / "carphone_pristine.csv")) == decoded_frames(carphone)


def still_video(image_path, path, frames: int = 6):
    """A short mpeg4 video showing one still photo."""
    import cv2

    image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    image = image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
        for _ in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_several_faces_and_the_abaw_left_right_pair(group_photo, tmp_path):
    video = still_video(group_photo, tmp_path / "group.mp4")
    table = annotate_file(video, tmp_path / "group", fmt="abaw", max_faces=2)
    assert len(table) == 2 * 6 and table["face_id"].nunique() == 2
    assert table.groupby("face_id").size().tolist() == [6, 6]
    assert table["valence"].notna().all()
    left = (tmp_path / "group_left.txt").read_text().splitlines()
    right = (tmp_path / "group_right.txt").read_text().splitlines()
    assert left[1].startswith("group_left/00001.jpg,") and len(left) == len(right) == 7
    record = json.loads((tmp_path / "group.json").read_text())
    assert record["outputs"] == ["group_left.txt", "group_right.txt"]
    assert annotate_module.output_files(tmp_path / "group", "abaw")[1:] == [
        tmp_path / "group_left.txt",
        tmp_path / "group_right.txt",
    ]
    with pytest.raises(AvemoError, match="one face per file"):
        annotate_file(video, tmp_path / "group3", fmt="abaw", max_faces=3)


def test_a_smile_comes_out_positive_end_to_end(astronaut_photo, tmp_path):
    table = annotate(still_video(astronaut_photo, tmp_path / "smile.mp4"))
    assert (table["valence_raw"] > 0.4).all()
    assert table["p_happy"].min() > 0.5


def test_readme_quick_start_runs_as_written(tmp_path):
    """The README's Quick start job (after its `pip install`), run by bash as a real process."""
    import os
    import stat
    import subprocess
    import sys
    from pathlib import Path

    from test_packaging import readme_commands

    root = Path(__file__).resolve().parents[1]
    job = readme_commands()[0].split("pip install -c constraints.txt . && ", 1)[1]
    shim = tmp_path / "bin" / "avemo"  # the console script, for this checkout
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m avemo "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{shim.parent}:{os.environ['PATH']}", "PYTHONPATH": str(root)}
    done = subprocess.run(
        ["bash", "-c", job], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    header, first, second = done.stdout.splitlines()
    assert header.startswith(",".join(COLUMNS))
    assert first.startswith("0,0,0,1,") and second.startswith("1,")


@pytest.mark.parametrize("container", ["ts", "avi"])
def test_pipelines_run_on_clocks_that_go_back(tmp_path, carphone, trained_pipeline, container):
    """MPEG-TS copies concatenated byte-wise (the clock restarts at each copy: audio windows used
    to fail with 'must not go back'), and an AVI with B-frames (timestamps in decoding order)."""
    import media

    frames = media.carphone_frames(carphone, 60)
    audio = [(0.0, media.stereo(media.speech_like(2.0)))]
    if container == "ts":
        one = media.write_av(tmp_path / "one.ts", frames, audio=audio)
        path = media.concatenated(one, tmp_path / "three.ts", 3)
    else:
        path = media.write_av(tmp_path / "b.avi", frames, audio=audio, encoder={"bf": "3"})
    table = annotate(path, model=trained_pipeline, stride=4)
    # every frame of the copies has its row: the frame a seam damages keeps its number (and a
    # row with the frame's time), so no later frame moves
    check_table(table, 180 if container == "ts" else 60)
    assert decoded_frames(path) >= len(table) - 2
    times = table["timestamp"].to_numpy()
    assert np.allclose(np.diff(times), 1 / 30, atol=2e-6)
    assert table["valence"].notna().mean() > 0.9  # the face is found and valued throughout
    record = table.attrs["avemo"]["input"]
    assert record["audio_stream"] and record["audio_gaps"] < 0.05
