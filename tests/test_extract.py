"""The feature cache: file format, pairing crops with videos, extraction, and the end-to-end path
extract -> train -> bundle -> evaluate on a tiny Aff-Wild2-shaped dataset of real face frames."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import tiny  # tests/tiny.py: small registered backbones
import torch
from PIL import Image
from typer.testing import CliRunner

from avemo import dataset as D
from avemo import models
from avemo.cache import CACHE_JSON, Features, read_cache_info, read_features, write_features
from avemo.cli import app
from avemo.clips import clip_frames
from avemo.errors import AvemoError
from avemo.extract import CropReader, Source, crop_frames, find_sources
from avemo.models.backbones import CLIP_SIZE, normalise_clips

FRAMES = 120  # frames of the test clips (4 s of carphone)
MISSING = {"pair_left": range(40, 50), "pair_right": range(0, 40)}  # frames without a face crop
SPLITS = {"talk": "Validation_Set", "pair_left": "Train_Set", "pair_right": "Train_Set"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


# --- the cache file format ------------------------------------------------------------------------


def test_feature_files_round_trip_memory_mapped(tmp_path):
    rng = np.random.default_rng(0)
    features = Features(
        "v",
        audio=rng.normal(size=(50, 4)).astype(np.float32),
        visual=rng.normal(size=(50, 6)).astype(np.float32),
        frame=np.arange(1, 51),
        face=rng.random(50) > 0.3,
        info={"fps": 30.0},
    )
    write_features(tmp_path / "v.npz", features)
    back = read_features(tmp_path / "v.npz")
    assert isinstance(back.visual, np.memmap) and not back.visual.flags.writeable
    for key in ("audio", "visual", "frame", "face"):
        assert np.array_equal(getattr(back, key), getattr(features, key))
    assert back.info == {"fps": 30.0} and back.num_frames == 50
    # numpy reads the same file
    with np.load(tmp_path / "v.npz") as plain:
        assert plain["frame"].dtype == np.int64 and plain["audio"].dtype == np.float32
        assert np.array_equal(plain["visual"], features.visual)


def test_bad_feature_files_fail_clearly(tmp_path):
    path = tmp_path / "v.npz"
    write_features(
        path, Features("v", np.zeros((3, 2)), np.zeros((3, 2)), np.arange(1, 4), np.ones(3, bool))
    )
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(AvemoError, match="not a readable feature file"):
        read_features(path)
    np.savez(tmp_path / "w.npz", audio=np.zeros((3, 2)))
    with pytest.raises(AvemoError, match="missing visual, frame, face"):
        read_features(tmp_path / "w.npz")
    with pytest.raises(AvemoError, match="not a feature cache"):
        read_cache_info(tmp_path)
    with pytest.raises(ValueError, match="one row per clip"):
        write_features(
            path,
            Features("v", np.zeros((3, 2)), np.zeros((2, 2)), np.arange(1, 4), np.ones(3, bool)),
        )


# --- pairing crops folders with videos -----------------------------------------------------------


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_sources_pair_affwild2_crops_with_videos_and_left_right_with_their_base(tmp_path):
    for name in ("a", "b_left", "b_right", "c"):
        touch(tmp_path / "cropped_aligned" / name / "00001.jpg")
    touch(tmp_path / "videos" / "a.mp4")
    touch(tmp_path / "videos" / "sub" / "b.avi")
    sources = find_sources([tmp_path / "videos"], tmp_path / "cropped_aligned")
    by_name = {s.name if isinstance(s, Source) else s[0]: s for s in sources}
    assert by_name["a"].video == tmp_path / "videos" / "a.mp4"
    assert by_name["b_left"].video == by_name["b_right"].video == tmp_path / "videos/sub/b.avi"
    assert by_name["b_left"].crops == tmp_path / "cropped_aligned" / "b_left"
    assert by_name["c"] == ("c", "no video file for 'c' (looked for c.* too)")
    # with labels: exactly the labelled videos; a labelled video without crops is a problem
    sources = find_sources([tmp_path / "videos"], tmp_path / "cropped_aligned", ["a", "d"])
    assert [s.name for s in sources if isinstance(s, Source)] == ["a"]
    assert sources[1][0] == "d" and sources[1][1].startswith("no face crops folder named 'd'")


def test_sources_pair_avemo_faces_crops_with_their_videos(tmp_path):
    # `avemo faces IN -o OUT --save-crops` writes OUT/<rel>/<stem>/%05d.jpg for IN/<rel>/<stem>.mp4
    touch(tmp_path / "faces" / "day1" / "clip" / "00003.jpg")
    touch(tmp_path / "faces" / "day2" / "clip" / "00001.jpg")
    touch(tmp_path / "faces" / "day2" / "clip_face1" / "00001.jpg")  # --max-faces 2
    touch(tmp_path / "in" / "day1" / "clip.mp4")
    touch(tmp_path / "in" / "day2" / "clip.mov")
    sources = find_sources([tmp_path / "in"], tmp_path / "faces")
    assert [(s.name, s.video.relative_to(tmp_path).as_posix()) for s in sources] == [
        ("day1/clip", "in/day1/clip.mp4"),
        ("day2/clip", "in/day2/clip.mov"),
        ("day2/clip_face1", "in/day2/clip.mov"),
    ]
    assert crop_frames(sources[0].crops) == {2: tmp_path / "faces/day1/clip/00003.jpg"}


# --- a tiny Aff-Wild2-shaped dataset of real face frames -----------------------------------------


def label_values(frames: int, seed: int) -> np.ndarray:
    """Smooth valence/arousal with a few -5 (invalid) frames."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)
    values = np.stack([0.6 * np.sin(t / 15 + rng.uniform(0, 6)), 0.5 * np.cos(t / 25)], 1)
    values[rng.integers(0, frames, 6)] = -5
    return values


@pytest.fixture(scope="module")
def affwild2(tmp_path_factory, av_clip, carphone):
    """``videos/`` (talk.mp4, pair.mp4: carphone with speech-like audio), ``cropped_aligned/``:
    talk's faces aligned by ``avemo faces --save-crops`` (as annotate aligns them), pair_left and
    pair_right as carphone frames resized to 112x112 with stretches without a face; labels of
    talk in ``labels/Validation_Set``, of the pair in ``labels/Train_Set``; random backbones."""
    import av

    root = tmp_path_factory.mktemp("affwild2")
    (root / "videos").mkdir()
    shutil.copy(av_clip, root / "videos" / "talk.mp4")
    shutil.copy(av_clip, root / "videos" / "pair.mp4")
    result = CliRunner().invoke(
        app, ["faces", str(root / "videos" / "talk.mp4"), "-o", str(root / "faces"), "--save-crops"]
    )
    assert result.exit_code == 0, result.output
    (root / "cropped_aligned").mkdir()
    shutil.move(root / "faces" / "talk", root / "cropped_aligned" / "talk")
    with av.open(str(carphone)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)][:FRAMES]
    for name, missing in MISSING.items():
        folder = root / "cropped_aligned" / name
        folder.mkdir(parents=True)
        for i, frame in enumerate(frames):
            if i not in missing:
                Image.fromarray(frame).resize((CLIP_SIZE, CLIP_SIZE)).save(
                    folder / f"{i + 1:05d}.jpg"
                )
    for seed, (name, split) in enumerate(SPLITS.items()):
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        lines = ["valence,arousal"] + [f"{v:.3f},{a:.3f}" for v, a in label_values(FRAMES, seed)]
        (root / "labels" / split / f"{name}.txt").write_text("\n".join(lines) + "\n")
    torch.manual_seed(0)
    models.save(
        models.build(tiny.VIDEO),
        root / "visual.safetensors",
        provenance={"trained": False},
    )
    models.save(
        models.build("audio_resnet18"), root / "audio.safetensors", provenance={"trained": False}
    )
    return root


@pytest.fixture(scope="module")
def cache(affwild2):
    """The dataset's feature cache, made by the CLI."""
    root = affwild2
    result = CliRunner().invoke(
        app,
        [
            "extract",
            str(root / "videos"),
            "--crops",
            str(root / "cropped_aligned"),
            "-o",
            str(root / "cache"),
            "--visual",
            str(root / "visual.safetensors"),
            "--audio",
            str(root / "audio.safetensors"),
            "--labels",
            str(root / "labels"),
            "--device",
            "cpu",
            "--batch-size",
            "16",
        ],  # fmt: skip
    )
    assert result.exit_code == 0, result.output
    assert "3 videos done, 0 skipped" in result.output
    return root / "cache"


def test_extract_writes_one_dense_file_per_video_and_describes_the_backbones(affwild2, cache):
    info = read_cache_info(cache)
    assert info["visual"]["builder"] == tiny.VIDEO and info["audio"]["builder"] == "audio_resnet18"
    assert info["visual"]["checkpoint"] == str((affwild2 / "visual.safetensors").resolve())
    assert info["visual"]["preprocessing"]["size"] == [CLIP_SIZE, CLIP_SIZE]
    assert info["spectrogram"]["n_mels"] == 64 and info["clip"] == {
        "frames": 8,
        "window": 32,
        "tiling": "dense",
    }
    files = sorted(p.name for p in cache.glob("*.npz"))
    assert files == ["pair_left.npz", "pair_right.npz", "talk.npz"]
    for name in SPLITS:
        features = read_features(cache / f"{name}.npz")
        assert features.audio.shape == (FRAMES, 512) and features.visual.shape == (FRAMES, 16)
        assert np.array_equal(features.frame, np.arange(1, FRAMES + 1))
        assert features.info["audio"] is True and features.info["frames"] == FRAMES
    # pair_right has no face in frames 1-40: no face in the windows ending there, one black clip
    right = read_features(cache / "pair_right.npz")
    assert not right.face[:40].any() and right.face[40:].all()
    assert np.allclose(right.visual[0], right.visual[39]) and not np.allclose(
        right.visual[39], right.visual[40]
    )
    # the two halves of a two-person video share its audio track
    left = read_features(cache / "pair_left.npz")
    assert np.array_equal(left.audio, right.audio)
    assert not np.allclose(left.audio[10], left.audio[100])  # real audio, not silence


def test_cached_visual_features_are_the_backbone_on_the_clip_of_each_end_frame(affwild2, cache):
    features = read_features(cache / "pair_left.npz")
    backbone = models.load(affwild2 / "visual.safetensors")
    reader = CropReader(affwild2 / "cropped_aligned" / "pair_left", CLIP_SIZE)
    present = np.zeros(FRAMES, bool)
    present[list(reader.frames)] = True
    ends = np.array([0, 45, 47, 119])  # 41..50 are missing: their windows have fewer frames
    black = np.zeros((CLIP_SIZE, CLIP_SIZE, 3), np.uint8)
    clips = np.stack(
        [[reader(i) if i >= 0 else black for i in clip_frames(int(e), present)] for e in ends]
    )
    clips = torch.from_numpy(clips).permute(0, 4, 1, 2, 3)  # B x 3 x T x H x W
    clips = normalise_clips(clips, read_cache_info(cache)["visual"]["preprocessing"])
    assert clips.shape == (4, 3, 8, CLIP_SIZE, CLIP_SIZE)
    with torch.inference_mode():
        expected = backbone(clips).numpy()
    assert np.allclose(features.visual[ends], expected, atol=1e-5)


def test_extract_skips_cached_videos_and_reports_missing_inputs_on_one_line(
    affwild2, cache, tmp_path
):
    runner = CliRunner()
    base = [
        "extract", str(affwild2 / "videos"), "--crops", str(affwild2 / "cropped_aligned"),
        "--visual", str(affwild2 / "visual.safetensors"),
        "--audio", str(affwild2 / "audio.safetensors"), "--device", "cpu",
    ]  # fmt: skip
    result = runner.invoke(app, [*base, "-o", str(cache), "--labels", str(affwild2 / "labels")])
    assert result.exit_code == 0 and "0 videos done, 3 skipped" in result.output
    # a labelled video without crops and one without a video file: one line each, the rest done
    labels = tmp_path / "labels"
    labels.mkdir()
    for name in ("talk", "ghost"):
        (labels / f"{name}.txt").write_text("valence,arousal\n0.1,0.2\n")
    shutil.copytree(affwild2 / "cropped_aligned" / "talk", tmp_path / "crops" / "talk")
    shutil.copytree(affwild2 / "cropped_aligned" / "talk", tmp_path / "crops" / "lost")
    (labels / "lost.txt").write_text("valence,arousal\n0.1,0.2\n")
    out = tmp_path / "cache"
    args = [*base[:3], str(tmp_path / "crops"), *base[4:], "-o", str(out), "--labels", str(labels)]
    args[1] = str(affwild2 / "videos" / "talk.mp4")
    result = runner.invoke(app, [*args, "--bf16"])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: ghost: no face crops folder named 'ghost' in {tmp_path / 'crops'}",
        "error: lost: no video file for 'lost' (looked for lost.* too)",
    ]
    assert "1 videos done" in result.output and (out / "talk.npz").exists()
    # bfloat16 autocast: the same features to bf16 precision, and the cache says so
    assert read_cache_info(out)["precision"] == "bf16 autocast"
    fp32, bf16 = read_features(cache / "talk.npz"), read_features(out / "talk.npz")
    assert np.allclose(bf16.visual, fp32.visual, rtol=0.05, atol=0.02)
    assert np.allclose(bf16.audio, fp32.audio, rtol=0.05, atol=0.05)
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "holds bf16 autocast features" in result.output
    # a cache of other backbones is not mixed with new features
    torch.manual_seed(1)
    other = tmp_path / "other.safetensors"
    models.save(models.build(tiny.VIDEO), other, provenance={"trained": False})
    args[args.index("--visual") + 1] = str(other)
    result = runner.invoke(app, [*args, "--bf16"])
    assert result.exit_code == 2 and "another visual backbone" in result.output


def test_extract_train_bundle_annotate_evaluate_end_to_end(affwild2, cache, tmp_path):
    runner = CliRunner()
    head, pipeline = tmp_path / "jca.safetensors", tmp_path / "pipeline.safetensors"
    labels = affwild2 / "labels"
    result = runner.invoke(
        app,
        [
            "train", "--features", str(cache), "--labels", str(labels / "Train_Set"),
            "--val", str(labels / "Validation_Set"), "--head", "jca", "--recipe", "jca-journal",
            "--epochs", "2", "--batch-size", "8", "--device", "cpu",
            "-o", str(head), "--pipeline", str(pipeline),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    training = models.read_header(head)["provenance"]["training"]
    assert training["recipe"]["seq_len"] == 16
    assert training["data"]["validation_videos"] == ["talk"]
    assert pd.read_csv(tmp_path / "jca.log.csv")["epoch"].tolist() == [1, 2]

    # the pipeline holds the cache's backbones and the trained head
    bundled = models.load(pipeline)
    assert bundled.avemo_header["component"] == "pipeline" and bundled.seq_len == 16
    provenance = bundled.avemo_header["provenance"]
    assert provenance["training"]["best_epoch"] == training["best_epoch"]
    assert provenance["components"]["visual"]["builder"] == tiny.VIDEO
    for mine, theirs in (
        (bundled.head, models.load(head)),
        (bundled.visual, models.load(affwild2 / "visual.safetensors")),
    ):
        expected = theirs.state_dict()
        assert all(torch.equal(value, expected[k]) for k, value in mine.state_dict().items())

    # annotate the validation video with the pipeline (it finds and aligns the face itself)
    result = runner.invoke(
        app,
        [
            "annotate", str(affwild2 / "videos" / "talk.mp4"), "-o", str(tmp_path / "out"),
            "--model", str(pipeline), "--stride", "1", "--no-smooth", "--device", "cpu",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    annotated = pd.read_csv(tmp_path / "out" / "talk.csv")
    assert len(annotated) == FRAMES
    # the same per-frame values as the head on the cached features, up to the JPEG compression
    # of the saved crops that extraction read
    cached = np.clip(D.predict_video(bundled.head, read_features(cache / "talk.npz"), 16), -1, 1)
    values = annotated[["valence", "arousal"]].to_numpy()
    assert np.isfinite(values).all()
    assert np.abs(values - cached).max() < 0.05
    assert np.corrcoef(values[:, 0], cached[:, 0])[0, 1] > 0.99

    # `avemo evaluate` on annotate's output scores what training's validation reported
    summary = tmp_path / "summary.json"
    result = runner.invoke(
        app,
        ["evaluate", str(tmp_path / "out"), str(labels / "Validation_Set"), "--json", str(summary)],
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(summary.read_text())
    invalid = np.flatnonzero((label_values(FRAMES, 0) == -5).any(axis=1))
    assert scores["n_frames"] == training["validation"]["n_frames"] == FRAMES - len(invalid)
    assert scores["ccc_mean"] == pytest.approx(training["validation"]["ccc_mean"], abs=0.05)

    # bundling refuses a head that is not one, and backbones that changed since extraction
    result = runner.invoke(
        app, ["bundle", str(pipeline), "--features", str(cache), "-o", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "not a fusion head checkpoint" in result.output
    cache_json = json.loads((cache / CACHE_JSON).read_text())
    moved = tmp_path / "moved"
    shutil.copytree(cache, moved)
    cache_json["visual"]["sha256"] = "0" * 64
    (moved / CACHE_JSON).write_text(json.dumps(cache_json))
    result = runner.invoke(
        app, ["bundle", str(head), "--features", str(moved), "-o", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "changed since extraction" in result.output
