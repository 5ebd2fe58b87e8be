"""Batch runs: outputs stay inside OUT, no two inputs share an output, whole-run problems are
usage errors found before any video is processed (issue: reliability, items 1, 2, 6)."""

from __future__ import annotations

import shutil
import zipfile

import pytest
import tiny  # tests/tiny.py: small registered backbones
import torch
from typer.testing import CliRunner

from avemo import models
from avemo.batch import check_collisions, find_jobs, plan, safe_stem
from avemo.cli import app
from avemo.errors import AvemoError

ODD_NAMES = ("..mp4", "...mp4", ".clip.mp4", ".mp4")


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(
    ("name", "stem"),
    [("..mp4", "_"), ("...mp4", "__"), (".clip.mp4", "_clip"), (".mp4", "_mp4"),
     ("clip.mp4", "clip"), ("a.b.mp4", "a.b"), ("x", "x")],
)  # fmt: skip
def test_safe_stems(name, stem):
    assert safe_stem(name) == stem


def test_odd_names_map_inside_out_and_nothing_outside_is_touched(no_audio_clip, tmp_path):
    videos = tmp_path / "in"
    videos.mkdir()
    for name in ODD_NAMES:
        shutil.copy(no_audio_clip, videos / name)
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("the user's file")
    (tmp_path / "out.csv").write_text("the user's file next to OUT")
    (tmp_path / "out.faces.csv").write_text("another one")
    jobs = find_jobs([videos, *(videos / n for n in ODD_NAMES)], out)
    assert len(jobs) == 4  # files given twice (folder and path) are one job each
    for job in jobs:
        assert job.output_stem.parent == out and not job.output_stem.name.startswith(".")
    result = run("faces", videos, videos / ".mp4", "-o", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(
        ["mine.txt", "_.faces.csv", "__.faces.csv", "_clip.faces.csv", "_mp4.faces.csv"]
    )
    assert (out / "mine.txt").read_text() == "the user's file"
    assert (tmp_path / "out.csv").read_text() == "the user's file next to OUT"
    assert (tmp_path / "out.faces.csv").read_text() == "another one"
    # annotate: `..mp4` writes OUT/_.csv, never OUT.csv
    result = run("annotate", videos / "..mp4", "-o", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert (out / "_.csv").is_file() and (out / "_.json").is_file()
    assert (tmp_path / "out.csv").read_text() == "the user's file next to OUT"


@pytest.mark.parametrize("layout", ["same name, two folders", "one stem, three containers"])
def test_inputs_that_would_share_an_output_are_refused_before_any_work(
    no_audio_clip, tmp_path, layout
):
    if layout == "same name, two folders":
        inputs = [tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4"]
    else:
        inputs = [tmp_path / "v" / f"clip{ext}" for ext in (".mp4", ".avi", ".mkv")]
    for path in inputs:
        path.parent.mkdir(exist_ok=True)
        shutil.copy(no_audio_clip, path)
    given = inputs if layout == "same name, two folders" else [tmp_path / "v"]
    out = tmp_path / "out"
    for command in (["annotate"], ["faces"], ["annotate", "--overwrite"]):
        result = run(*command, *given, "-o", out, "--device", "cpu")
        assert result.exit_code == 2, result.output
        (line,) = result.output.strip().splitlines()
        assert line.startswith("error: ") and "would write the same outputs" in line
        assert all(str(p) in line for p in inputs)
        assert not out.exists() or not any(out.iterdir())
    with pytest.raises(AvemoError):
        check_collisions(find_jobs(given, out))
    # one folder that holds both keeps their relative paths apart; two folders do not
    if layout == "same name, two folders":
        with pytest.raises(AvemoError):
            plan([tmp_path / "a", tmp_path / "b"], out)
        both = plan([tmp_path], out)
        assert sorted(j.output_stem.relative_to(out).as_posix() for j in both) == [
            "a/clip", "b/clip"
        ]  # fmt: skip


def test_output_that_is_a_file_or_unwritable_is_a_usage_error(no_audio_clip, tmp_path):
    afile = tmp_path / "out"
    afile.write_text("not a folder")
    for target in (afile, afile / "sub", "/sys/avemo-cannot-be-created"):
        for command in ("annotate", "faces"):
            result = run(command, no_audio_clip, "-o", target, "--device", "cpu")
            assert result.exit_code == 2, result.output
            assert result.output.startswith("error: ") and "output folder" in result.output
    assert afile.read_text() == "not a folder"


def test_incompatible_options_are_refused_before_any_video(no_audio_clip, tmp_path):
    out = tmp_path / "out"
    result = run("annotate", no_audio_clip, "-o", out, "--format", "abaw", "--max-faces", "9")
    assert result.exit_code == 2 and "--max-faces 9" in result.output
    assert not out.exists()


def test_model_with_a_good_header_but_missing_tensors_is_refused_up_front(
    no_audio_clip, tmp_path
):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    whole = tmp_path / "whole.safetensors"
    models.save(tiny.tiny_pipeline(), whole, provenance={"trained": True, "source": "test"})
    with safe_open(str(whole), framework="pt") as handle:  # keep the header, drop one tensor
        metadata = handle.metadata()
    tensors = load_file(str(whole))
    tensors.pop(sorted(tensors)[0])
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken), metadata=metadata)
    videos = tmp_path / "in"
    videos.mkdir()
    for i in range(3):
        shutil.copy(no_audio_clip, videos / f"v{i}.mp4")
    out = tmp_path / "out"
    result = run("annotate", videos, "-o", out, "--model", broken, "--device", "cpu")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "missing tensor" in line and str(broken) in line
    assert not out.exists()


@pytest.mark.parametrize("kind", ["deflated zeros", "lying size"])
def test_zip_bombs_are_refused_before_unpacking(tmp_path, kind):
    from avemo.convert import import_command

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        if kind == "deflated zeros":  # 256 MiB of zeros in ~250 KB
            with archive.open("model.pth", "w", force_zip64=True) as member:
                block = bytes(1 << 20)
                for _ in range(256):
                    member.write(block)
        else:
            buffer = __import__("io").BytesIO()
            torch.save({"w": torch.zeros(4)}, buffer)
            archive.writestr("model.pth", buffer.getvalue())
    if kind == "lying size":  # the central directory says 1 byte; the data is larger
        data = bytearray(bomb.read_bytes())
        at = data.rfind(b"PK\x01\x02")
        data[at + 24 : at + 28] = (1).to_bytes(4, "little")  # uncompressed size
        bomb.write_bytes(bytes(data))
    with pytest.raises(AvemoError) as caught:
        import_command([str(bomb)], tmp_path / "out.safetensors", fmt="torchvision")
    assert caught.value.status == 1
    message = str(caught.value)
    assert any(why in message for why in ("zip bomb", "larger than the archive", "Bad CRC"))
    assert not (tmp_path / "out.safetensors").exists()
