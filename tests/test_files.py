"""Files are created like any tool creates them: modes from the umask, temporary names that fit
the file system, stale parts of killed runs removed (and a live writer's never), damage warnings
once, GIFs found in folders."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import media
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from avemo import files
from avemo.batch import find_jobs
from avemo.cli import app
from avemo.decode import iter_frames
from avemo.files import atomic_path, part_path, remove_stale_parts

FAST = ["--detect-every", "4", "--no-progress"]


@pytest.fixture
def umask():
    """Set the umask for one test (restored after)."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- modes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002, 0o077])
def test_atomic_outputs_honour_the_umask(tmp_path, umask, mask):
    from avemo import models

    umask(mask)
    with atomic_path(tmp_path / "a.csv") as tmp:
        tmp.write_text("frame\n")
    with atomic_path(tmp_path / "b.bin") as tmp, open(tmp, "wb") as handle:
        handle.write(b"x")
    net = models.build("jca", audio_dim=4, visual_dim=4, seq_len=8, proj_dim=4, attn_dim=4)
    models.save(net, tmp_path / "c.safetensors", provenance={"trained": False})
    for name in ("a.csv", "b.bin", "c.safetensors"):
        assert mode(tmp_path / name) == 0o666 & ~mask, name
    assert mode(files.make_part_dir(tmp_path / "d")) == 0o777 & ~mask


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_faces_outputs_and_crop_folders_honour_the_umask(tmp_path, carphone, umask, mask):
    umask(mask)
    shutil.copy(carphone, tmp_path / "talk.mp4")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["faces", str(tmp_path / "talk.mp4"), "-o", str(out), "--save-crops", *FAST]
    )
    assert result.exit_code == 0, result.output
    assert mode(out / "talk.faces.csv") == 0o666 & ~mask
    assert mode(out / "talk") == 0o777 & ~mask
    crops = sorted((out / "talk").iterdir())
    assert crops and all(mode(crop) == 0o666 & ~mask for crop in crops)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no part left


# --- long names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "x" * 247 + ".csv",  # 251 bytes
        "y" * 251 + ".csv",  # 255 bytes: the longest legal name
        "é" * 125 + ".csv",  # 254 bytes in UTF-8 (125 characters)
        "ø" * 120 + "x.tar.gz",  # a multi-byte character cut in the middle
    ],
)
def test_long_output_names_get_temporary_names_that_fit(tmp_path, name):
    target = tmp_path / name
    assert len(os.fsencode(name)) <= 255
    for _ in range(3):
        candidate = part_path(target)
        assert len(os.fsencode(candidate.name)) <= 255
        assert candidate.name.startswith(".") and candidate.name.endswith(".part")
    with atomic_path(target) as tmp:
        tmp.write_text("ok")
    assert target.read_text() == "ok"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_a_video_with_a_247_character_name_is_processed(tmp_path, no_audio_clip):
    source = tmp_path / "in" / ("v" * 243 + ".mp4")
    source.parent.mkdir()
    shutil.copy(no_audio_clip, source)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["faces", str(source), "-o", str(out), *FAST])
    assert result.exit_code == 0, result.output
    written = out / ("v" * 243 + ".faces.csv")
    assert len(written.name) == 253 and len(pd.read_csv(written)) == 30


# --- stale parts ----------------------------------------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def part(target: Path, token: str, *, folder: bool = False, age: float = 0.0) -> Path:
    path = target.with_name(f".{target.name}.{token}.part")
    if folder:
        path.mkdir()
        (path / "00001.jpg").write_bytes(b"x")
    else:
        path.write_text("half")
    if age:
        then = time.time() - age
        os.utime(path, (then, then))
    return path


def test_stale_parts_are_removed_and_live_ones_kept(tmp_path):
    target = tmp_path / "clip.csv"
    me = files._writer()
    other = "0" * 8 if me != "0" * 8 else "1" * 8
    day = files.STALE_PART_AGE
    stale = [
        part(target, f"{me}-{dead_pid()}-abcdef"),  # killed run on this machine
        part(target, f"{me}-{dead_pid()}-abcdef", folder=True),  # a killed crops folder
        part(target, f"{other}-{os.getpid()}-123456", age=day + 60),  # elsewhere, long idle
        part(target, "k2j_0x9q", age=day + 60),  # tempfile name of an older avemo, long idle
    ]
    kept = [
        part(target, f"{me}-{os.getpid()}-abcdef"),  # this process: writing right now
        part(target, f"{me}-{os.getppid()}-abcdef", age=day + 60),  # a running process
        part(target, f"{other}-{dead_pid()}-abcdef", age=60),  # elsewhere: cannot tell, recent
        part(target, "ab_9z7yq"),  # older avemo, recent
        part(target, f"{me}-{dead_pid()}-abcdef.mine", age=day + 60),  # not avemo's pattern
        part(target, "notes", age=day + 60),  # a user's file that looks a little like one
        part(tmp_path / "clip.csv.bak", f"{me}-{dead_pid()}-abcdef"),  # another output's part
        part(tmp_path / "clip", f"{me}-{dead_pid()}-abcdef"),  # another output's part
    ]
    removed = remove_stale_parts(target)
    assert sorted(p.name for p in removed) == sorted(p.name for p in stale), (removed, stale)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)


def test_a_killed_run_leaves_a_part_that_the_next_run_removes(tmp_path):
    target = tmp_path / "out" / "clip.csv"
    script = textwrap.dedent(
        f"""
        import os, signal
        from avemo.files import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_text("half written")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script])
    assert result.returncode == -signal.SIGKILL
    left = [p for p in target.parent.iterdir() if p.name.endswith(".part")]
    assert len(left) == 1 and not target.exists()
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert sorted(p.name for p in target.parent.iterdir()) == ["clip.csv"]


def test_a_concurrent_writer_keeps_its_part(tmp_path):
    target = tmp_path / "clip.csv"
    script = textwrap.dedent(
        f"""
        import sys, time
        from avemo.files import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_text("first")
            print(tmp, flush=True)
            sys.stdin.readline()  # wait until told
        """
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        theirs = Path(writer.stdout.readline().strip())
        with atomic_path(target) as tmp:  # a second writer of the same output meanwhile
            tmp.write_text("second")
        assert theirs.exists()
    finally:
        writer.communicate("go\n", timeout=60)
    assert writer.returncode == 0
    assert target.read_text() == "first"  # the last to finish wins, as with any rename
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.csv"]


def test_save_crops_removes_a_killed_runs_crop_folder(tmp_path, carphone):
    from avemo.face.detect import build_detector
    from avemo.face.scan import detect_tracks, save_crops

    folder = tmp_path / "out" / "talk"
    folder.parent.mkdir()
    stale = part(folder, f"{files._writer()}-{dead_pid()}-abcdef", folder=True)
    scan = detect_tracks(carphone, build_detector(), detect_every=8)
    assert save_crops(carphone, scan.tracks()[0], folder) > 100
    assert not stale.exists()
    assert sorted(p.name for p in folder.parent.iterdir()) == ["talk"]


# --- warnings once, GIFs -----------------------------------------------------------------------


def test_damage_is_reported_once_per_file(truncated_clip, tmp_path, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="avemo.decode"):
        result = CliRunner().invoke(
            app, ["faces", str(truncated_clip), "-o", str(out), "--save-crops", *FAST]
        )
        assert result.exit_code == 0, result.output
        for _ in iter_frames(truncated_clip):  # a third pass in the same process
            pass
    video = [r for r in caplog.records if ": video: " in r.getMessage()]
    assert len(video) == 1 and "truncated.mp4" in video[0].getMessage()
    # a different file with the same damage is its own report
    copy = tmp_path / "copy.mp4"
    shutil.copy(truncated_clip, copy)
    with caplog.at_level(logging.WARNING, logger="avemo.decode"):
        list(iter_frames(copy))
    assert sum(": video: " in r.getMessage() for r in caplog.records) == 2


def write_gif(path: Path, frames) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("gif", rate=10)
        first = frames[0]
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "rgb8"
        for image in frames:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="rgb8")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def test_gifs_are_videos_in_folders_too(tmp_path, carphone):
    folder = tmp_path / "in"
    folder.mkdir()
    write_gif(folder / "talk.gif", media.carphone_frames(carphone, 20))
    write_gif(folder / "UPPER.GIF", list(media.moving_frames(5)))
    (folder / "notes.txt").write_text("not a video")
    assert sorted(j.source.name for j in find_jobs([folder], tmp_path / "out")) == [
        "UPPER.GIF",
        "talk.gif",
    ]
    times = [f.time for f in iter_frames(folder / "talk.gif")]
    assert np.allclose(np.diff(times), 0.1) and len(times) == 20
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["faces", str(folder), "-o", str(out), *FAST])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "talk.faces.csv")
    assert len(table) == 20 and table["success"].mean() > 0.5
    assert len(pd.read_csv(out / "UPPER.faces.csv")) == 5


def test_sample_video_is_the_installed_carphone_clip(carphone):
    from avemo.files import sample_video

    assert sample_video() == carphone
    assert sample_video().stat().st_size > 100_000


def test_sha256_file(tmp_path):
    import hashlib

    from avemo.files import sha256_file

    path = tmp_path / "x.bin"
    path.write_bytes(b"avemo" * 1000)
    assert sha256_file(path, chunk=7) == hashlib.sha256(b"avemo" * 1000).hexdigest()
