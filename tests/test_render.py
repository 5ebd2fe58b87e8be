"""Looking at results: overlay videos, annotation plots, per-video summaries (and their CLI)."""

from __future__ import annotations

import json

import av
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from avemo.cli import app
from avemo.decode import iter_frames, probe
from avemo.render import Overlay

runner = CliRunner()


@pytest.fixture(scope="module")
def annotated(talk_clip, tmp_path_factory):
    """``avemo annotate --overlay`` of a talking face with speech: the output folder."""
    out = tmp_path_factory.mktemp("annotated")
    result = runner.invoke(app, ["annotate", str(talk_clip), "-o", str(out), "--overlay"])
    assert result.exit_code == 0, result.output
    return out


def _packets(path, kind):
    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        codec = stream.codec_context.name
        return codec, [(p.pts, bytes(p)) for p in container.demux(stream) if p.size]


def test_overlay_keeps_frames_times_size_and_audio(talk_clip, annotated):
    overlay = annotated / "talk.overlay.mp4"
    record = json.loads((annotated / "talk.json").read_text())
    assert record["settings"]["overlay"] and "talk.overlay.mp4" in record["outputs"]
    assert record["stages_s"]["overlay"] > 0
    source, drawn = list(iter_frames(talk_clip)), list(iter_frames(overlay))
    assert len(drawn) == len(source) == 120
    assert np.allclose([f.time for f in drawn], [f.time for f in source], atol=1e-4)
    assert (probe(overlay).width, probe(overlay).height) == (176, 144)
    with av.open(str(overlay)) as container:
        assert container.streams.video[0].codec_context.name in ("h264", "mpeg4")
    # the audio is copied packet for packet, not re-encoded
    assert _packets(overlay, "audio")[1] == _packets(talk_clip, "audio")[1]
    assert _packets(overlay, "audio")[0] == "aac"
    # something was drawn: the panels darken the bottom, the box is in the face's colour
    table = pd.read_csv(annotated / "talk.csv")
    frame = 100
    before, after = source[frame].image.astype(int), drawn[frame].image.astype(int)
    x0, y0, w, h = Overlay(table, 176, 144).trace  # the trace panel: darkened to half
    panel = (slice(y0, y0 + h), slice(x0, x0 + w))
    assert np.median(np.abs(after[panel] - before[panel] // 2)) < 6
    row = table.iloc[frame]
    x, y = int(row["face_x"]), int(row["face_y"] + row["face_height"] / 2)
    assert (
        np.abs(after[y - 1 : y + 2, x - 1 : x + 2] - before[y - 1 : y + 2, x - 1 : x + 2]).max()
        > 60
    )


def test_render_from_a_csv_and_the_wrong_video_is_refused(annotated, talk_clip, carphone, tmp_path):
    result = runner.invoke(
        app, ["render", str(annotated / "talk.csv"), str(talk_clip), "-o", str(tmp_path / "o.mp4")]
    )
    assert result.exit_code == 0, result.output
    assert sum(1 for _ in iter_frames(tmp_path / "o.mp4")) == 120
    csv = annotated / "talk.csv"
    wrong = pd.read_csv(csv)
    wrong["timestamp"] += 0.5
    wrong.to_csv(tmp_path / "shifted.csv", index=False)
    result = runner.invoke(
        app,
        ["render", str(tmp_path / "shifted.csv"), str(talk_clip), "-o", str(tmp_path / "x.mp4")],
    )
    assert result.exit_code == 1 and "annotation of another video" in result.output
    assert not (tmp_path / "x.mp4").exists() and not list(tmp_path.glob(".x.mp4*"))
    result = runner.invoke(
        app, ["render", str(talk_clip), str(talk_clip), "-o", str(tmp_path / "y")]
    )
    assert result.exit_code == 1 and "error:" in result.output


def test_overlay_draws_nan_gaps_and_several_faces_without_failing():
    rows = []
    for frame in range(60):
        for face in (0, 1):
            value = np.nan if 20 <= frame < 30 else np.sin(frame / 10) * (1 if face else -1)
            rows.append(
                dict(
                    frame=frame,
                    timestamp=frame / 30,
                    face_id=face,
                    success=int(frame % 7 > 0),
                    valence=value,
                    arousal=value / 2,
                    face_x=10 + 60 * face,
                    face_y=10,
                    face_width=40,
                    face_height=50,
                )
            )
    overlay = Overlay(pd.DataFrame(rows), 160, 120)
    for index in (0, 25, 59):
        image = np.full((120, 160, 3), 200, np.uint8)
        overlay.draw(image, index)
        assert (image != 200).any()


def test_plot_writes_one_png_per_annotation(annotated, tmp_path):
    (annotated / "bad.csv").write_text("a,b\n1,2\n")  # not an annotation: skipped in a folder
    result = runner.invoke(app, ["plot", str(annotated), "-o", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    png = tmp_path / "plots" / "talk.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    result = runner.invoke(app, ["plot", str(annotated / "bad.csv"), "-o", str(tmp_path / "p")])
    assert result.exit_code == 1 and "not an avemo annotate table" in result.output
    (annotated / "bad.csv").unlink()


def test_summarize_collects_one_row_per_video_and_face(annotated, tmp_path):
    out = tmp_path / "summary.csv"
    result = runner.invoke(app, ["summarize", str(annotated), "-o", str(out)])
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(out)
    table = pd.read_csv(annotated / "talk.csv")
    (row,) = summary.to_dict("records")
    assert row["video"] == "talk" and row["face_id"] == 0 and row["frames"] == len(table)
    assert row["face_share"] == pytest.approx(table["success"].mean())
    assert row["valence_mean"] == pytest.approx(table["valence"].mean(), abs=1e-5)
    assert row["arousal_q50"] == pytest.approx(table["arousal"].median(), abs=1e-5)
    assert row["voice_mean"] == pytest.approx(table["voice"].mean(), abs=1e-5)
    quadrants = summary.filter(like="share_").sum(axis=1)
    assert quadrants.iloc[0] == pytest.approx(1.0)
    result = runner.invoke(app, ["summarize", str(tmp_path / "empty"), "-o", str(out)])
    assert result.exit_code == 1 and "error:" in result.output
