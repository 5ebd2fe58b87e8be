"""Fusion-head training: recipes, sequences, folds, the loop, resume, determinism, the CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from avemo import dataset as D
from avemo import models
from avemo import train as T
from avemo.cache import CACHE_FORMAT, CACHE_JSON, Features, write_features
from avemo.cli import app
from avemo.clips import CLIP_WINDOW
from avemo.errors import AvemoError

# small widths so that every head trains in seconds on a CPU
SMALL = {
    "jca": {"proj_dim": 16, "attn_dim": 8, "hidden": 16},
    "concat": {"proj_dim": 16, "hidden": 16},
    "cross_attention": {"proj_dim": 16, "hidden": 16},
    "leader_follower": {"proj_dim": 16, "modal_dim": 8, "hidden": 16},
    "jmt": {"ffn_dim": 32, "hidden": 16},
    "jca_tbiom": {"joint_dim": 32, "hidden": 16, "lstm_layers": 1},
}
SEQ_LEN = 8
FAST = {"epochs": 8, "batch_size": 16, "lr": 3e-3, "seq_len": SEQ_LEN}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


# --- the synthetic feature task ------------------------------------------------------------------


def smooth_signal(rng: np.random.Generator, n: int) -> np.ndarray:
    """A slowly varying value in [-0.9, 0.9]: three sinusoids of 64-400 frame periods."""
    t = np.arange(n)
    x = sum(
        rng.uniform(0.3, 1) * np.sin(2 * np.pi * t / rng.uniform(64, 400) + rng.uniform(0, 6.3))
        for _ in range(3)
    )
    return (0.9 * x / np.abs(x).max()).astype(np.float32)


def modality(rng, basis, signal, segment=CLIP_WINDOW) -> np.ndarray:
    """Features ``offset + signal * direction + noise`` whose noise level changes per segment."""
    offset, direction = basis
    n = len(signal)
    sigma = np.repeat(rng.uniform(0.05, 0.4, size=n // segment + 1), segment)[:n]
    noise = sigma[:, None] * rng.normal(size=(n, len(offset)))
    return (offset + signal[:, None] * direction + noise).astype(np.float32)


def synthetic_videos(audio_dim=16, visual_dim=16, videos=8, frames=384, seed=0) -> list[D.Video]:
    """Valence is carried by the visual features only, arousal by the audio features only.

    Each modality has its own per-segment noise; a few frames per video are unlabelled (NaN, as
    -5 reads). A head must fuse both modalities to predict both dimensions.
    """
    rng = np.random.default_rng(seed)
    bases = {}
    for key, dim in (("audio", audio_dim), ("visual", visual_dim)):
        direction = rng.normal(size=dim)
        bases[key] = (rng.normal(size=dim), 2 * direction / np.linalg.norm(direction))
    out = []
    for i in range(videos):
        valence, arousal = smooth_signal(rng, frames), smooth_signal(rng, frames)
        labels = np.stack([valence, arousal], 1)
        start = rng.integers(0, frames - 20)
        labels[start : start + 20] = np.nan
        features = Features(
            f"video{i}",
            audio=modality(rng, bases["audio"], arousal),
            visual=modality(rng, bases["visual"], valence),
            frame=np.arange(1, frames + 1),
            face=np.ones(frames, bool),
        )
        out.append(D.Video(features, labels))
    return out


def train_head(head, videos, tmp_path, name=None, seed=0, **recipe):
    features = videos[0].features
    torch.manual_seed(seed)
    model = T.build_head(
        head, features.audio.shape[1], features.visual.shape[1], SEQ_LEN, **SMALL[head]
    )
    rules = T.recipe("jca-cvpr", **{**FAST, **recipe})
    output = tmp_path / f"{name or head}.safetensors"
    return T.fit(model, videos[:6], videos[6:], rules, output, seed=seed, progress=False)


def without(videos, modality_name):
    """The same videos with one modality's features zeroed (a single-modality baseline)."""
    out = []
    for video in videos:
        zeroed = np.zeros_like(getattr(video.features, modality_name))
        features = dataclasses.replace(video.features, **{modality_name: zeroed})
        out.append(D.Video(features, video.labels))
    return out


@pytest.fixture(scope="module")
def single_modality(tmp_path_factory):
    """Validation scores of the concat head given only visual or only audio features."""
    videos = synthetic_videos()
    tmp = tmp_path_factory.mktemp("single")
    return {
        kept: train_head("concat", without(videos, dropped), tmp, name=kept).validation
        for kept, dropped in (("visual", "audio"), ("audio", "visual"))
    }


@pytest.mark.parametrize("head", list(SMALL))
def test_every_head_learns_the_synthetic_task_and_fusion_beats_one_modality(
    head, tmp_path, single_modality
):
    videos = synthetic_videos(audio_dim=8, visual_dim=32) if head == "jca_tbiom" else None
    result = train_head(head, videos or synthetic_videos(), tmp_path)
    scores = result.validation
    assert scores["ccc_valence"] >= 0.8 and scores["ccc_arousal"] >= 0.8, scores
    best_single = max(s["ccc_mean"] for s in single_modality.values())
    assert scores["ccc_mean"] > best_single + 0.15, (scores, single_modality)
    header = models.read_header(result.output)
    training = header["provenance"]["training"]
    assert header["builder"] == head and header["provenance"]["trained"] is True
    assert training["best_epoch"] == result.best_epoch
    assert training["validation"]["ccc_mean"] == pytest.approx(scores["ccc_mean"])
    log = pd.read_csv(result.log)
    assert list(log.columns) == list(T.LOG_COLUMNS) and len(log) == result.epochs_run
    assert log["val_ccc_mean"].max() == pytest.approx(scores["ccc_mean"])


def test_single_modality_baselines_get_only_their_own_dimension(single_modality):
    visual, audio = single_modality["visual"], single_modality["audio"]
    assert visual["ccc_valence"] >= 0.8 and abs(visual["ccc_arousal"]) < 0.4
    assert audio["ccc_arousal"] >= 0.8 and abs(audio["ccc_valence"]) < 0.4


# --- recipes, heads ------------------------------------------------------------------


def test_recipes_follow_spec_7():
    cvpr = T.RECIPES["jca-cvpr"]
    assert (cvpr.optimizer, cvpr.lr, cvpr.batch_size, cvpr.epochs, cvpr.seq_len) == (
        "adam", 1e-3, 96, 30, 8,
    )  # fmt: skip
    # after epoch 5: 1e-3 * 0.8 ** ((epoch - 5) // 2)
    assert [cvpr.lr_at(e) for e in (0, 4, 5, 6)] == [1e-3] * 4
    assert cvpr.lr_at(7) == pytest.approx(8e-4) and cvpr.lr_at(9) == pytest.approx(6.4e-4)
    journal = T.RECIPES["jca-journal"]
    assert (journal.batch_size, journal.epochs, journal.seq_len) == (64, 50, 16)
    assert journal.lr_at(11) == pytest.approx(1e-3 * 0.8**3)
    paper = T.RECIPES["jmt-paper"]
    assert (paper.optimizer, paper.lr, paper.batch_size, paper.epochs, paper.folds) == (
        "sgd", 5e-4, 2, 5, 5,
    )  # fmt: skip
    code = T.RECIPES["jmt-code"]
    assert (code.optimizer, code.lr, code.momentum, code.nesterov) == ("sgd", 1e-4, 0.9, True)
    optimizer = T.make_optimizer(torch.nn.Linear(2, 2), code)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["nesterov"]
    assert T.recipe("jmt-paper", lr=0.1, epochs=None).lr == 0.1
    with pytest.raises(AvemoError, match="unknown recipe"):
        T.recipe("jca")


def test_head_arguments_fit_the_cache_or_say_why_not():
    assert T.head_arguments("jca", 512, 1024, 8) == {
        "audio_dim": 512, "visual_dim": 1024, "seq_len": 8,
    }  # fmt: skip
    assert T.head_arguments("jmt", 512, 512, 16) == {"dim": 512}
    assert T.head_arguments("jca_tbiom", 512, 25088, 16) == {
        "audio_dim": 512, "positions": 49, "seq_len": 16,
    }  # fmt: skip
    with pytest.raises(AvemoError, match="one width"):
        T.head_arguments("jmt", 512, 25088, 16)
    with pytest.raises(AvemoError, match="rows of the audio width"):
        T.head_arguments("jca_tbiom", 512, 1000, 16)
    with pytest.raises(AvemoError, match="unknown head"):
        T.head_arguments("nope", 1, 1, 1)
    with pytest.raises(AvemoError, match="not a fusion head"):
        T.head_arguments("r3d_18", 1, 1, 1)


# --- resume, determinism, early stopping --------------------------------------------------------


def tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tmp_path):
    videos = synthetic_videos(videos=8, frames=256)
    first = train_head("jca", videos, tmp_path, name="a", epochs=3)
    second = train_head("jca", videos, tmp_path, name="b", epochs=3)
    third = train_head("jca", videos, tmp_path, name="c", epochs=3, seed=1)
    a, b, c = (tensors(r.output) for r in (first, second, third))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)

    def scores(history):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in history]

    assert scores(first.history) == scores(second.history)


def test_an_interrupted_run_resumes_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    videos = synthetic_videos(videos=8, frames=256)
    whole = train_head("jca", videos, tmp_path, name="whole", epochs=4)

    calls = {"n": 0}
    real = T.validation_scores

    def interrupt_in_epoch_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "validation_scores", interrupt_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train_head("jca", videos, tmp_path, name="cut", epochs=4)
    state = T.state_path(tmp_path / "cut.safetensors")
    assert state.exists() and len(pd.read_csv(tmp_path / "cut.log.csv")) == 2
    monkeypatch.setattr(T, "validation_scores", real)
    resumed = train_head("jca", videos, tmp_path, name="cut", epochs=4)
    assert not state.exists()
    a, b = tensors(whole.output), tensors(resumed.output)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.best_epoch == whole.best_epoch and resumed.epochs_run == 4
    assert pd.read_csv(resumed.log)["val_ccc_mean"].tolist() == pytest.approx(
        pd.read_csv(whole.log)["val_ccc_mean"].tolist()
    )


def test_resuming_with_other_settings_is_refused(tmp_path, monkeypatch):
    videos = synthetic_videos(videos=8, frames=256)
    calls = {"n": 0}
    real = T.validation_scores

    def stop_in_epoch_2(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "validation_scores", stop_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_head("concat", videos, tmp_path, name="x", epochs=3)
    monkeypatch.undo()
    with pytest.raises(AvemoError, match="other settings"):
        train_head("concat", videos, tmp_path, name="x", epochs=3, lr=1e-2)


def test_patience_stops_after_epochs_without_improvement(tmp_path):
    videos = synthetic_videos(videos=8, frames=256)
    # lr 0: the validation CCC never improves after the first epoch
    result = train_head("concat", videos, tmp_path, epochs=10, lr=0.0, patience=2)
    assert result.epochs_run == 3 and result.best_epoch == 1
    assert [row["best"] for row in result.history] == [True, False, False]


# --- from a cache folder: train, cross-validate, the CLI ----------------------------------------


def write_dataset(root, videos, val_names=("video6", "video7")):
    """A feature cache and Aff-Wild2-style label folders (-5 for invalid) for ``videos``."""
    cache = root / "cache"
    cache.mkdir()
    backbone = {"builder": "test", "kwargs": {}, "checkpoint": "-", "sha256": "-", "part": None}
    info = {"format": CACHE_FORMAT, "visual": backbone, "audio": backbone}
    (cache / CACHE_JSON).write_text(json.dumps(info))
    for video in videos:
        write_features(cache / f"{video.name}.npz", video.features)
        split = "Validation_Set" if video.name in val_names else "Train_Set"
        folder = root / "labels" / split
        folder.mkdir(parents=True, exist_ok=True)
        values = np.nan_to_num(video.labels, nan=-5.0)
        lines = ["valence,arousal"] + [f"{v:.4f},{a:.4f}" for v, a in values]
        (folder / f"{video.name}.txt").write_text("\n".join(lines) + "\n")
    return cache, root / "labels"


def test_train_from_a_cache_with_a_validation_folder(tmp_path):
    cache, labels = write_dataset(tmp_path, synthetic_videos())
    out = tmp_path / "jca.safetensors"
    options = dict(recipe_name="jca-cvpr", head_kwargs=SMALL["jca"], **{
        k: v for k, v in FAST.items() if k != "seq_len"
    }, device="cpu", progress=False)  # fmt: skip
    result = T.train(cache, labels / "Train_Set", "jca", out, validation=labels / "Validation_Set",
                     **options)  # fmt: skip
    assert result.validation["ccc_mean"] >= 0.8
    training = models.read_header(out)["provenance"]["training"]
    assert training["data"]["validation_videos"] == ["video6", "video7"]
    assert training["data"]["train_videos"] == 6 and training["recipe"]["name"] == "jca-cvpr"
    assert training["split"] == {"validation": str(labels / "Validation_Set")}
    # a finished run is not trained again
    again = T.train(cache, labels / "Train_Set", "jca", out, validation=labels / "Validation_Set",
                    **options)  # fmt: skip
    assert again.best_epoch == result.best_epoch and again.epochs_run == result.epochs_run
    # the head reproduces its validation predictions after loading
    model = models.load(out)
    val = D.load_videos(cache, D.label_files([labels]), ["video6", "video7"])
    predictions = [D.predict_video(model, v.features, SEQ_LEN) for v in val]
    scores = T.validation_scores(predictions, val)
    assert scores["ccc_mean"] == pytest.approx(result.validation["ccc_mean"], abs=1e-6)


def test_cross_validation_trains_every_fold_and_reports_the_mean(tmp_path):
    cache, labels = write_dataset(tmp_path, synthetic_videos(videos=6, frames=256))
    out = tmp_path / "cv.safetensors"
    results = T.cross_validate(
        cache, [labels], "concat", out, folds=3, recipe_name="jca-cvpr",
        head_kwargs=SMALL["concat"], epochs=2, batch_size=16, seq_len=SEQ_LEN, device="cpu",
        progress=False,
    )  # fmt: skip
    assert [r.output.name for r in results] == [f"cv.fold{i}.safetensors" for i in range(3)]
    validated = [models.read_header(r.output)["provenance"]["training"]["data"] for r in results]
    assert sorted(sum((d["validation_videos"] for d in validated), [])) == [
        f"video{i}" for i in range(6)
    ]
    summary = pd.read_csv(tmp_path / "cv.folds.csv")
    assert summary["fold"].tolist() == ["0", "1", "2", "mean"]
    assert summary["ccc_mean"].iloc[-1] == pytest.approx(summary["ccc_mean"].iloc[:3].mean(), 1e-3)


def test_cli_trains_one_fold_and_reports_errors_on_one_line(tmp_path):
    cache, labels = write_dataset(tmp_path, synthetic_videos(videos=6, frames=256))
    runner = CliRunner()
    out = tmp_path / "fold1.safetensors"
    args = ["train", "--features", str(cache), "--labels", str(labels), "--head", "concat",
            "--recipe", "jca-cvpr", "--epochs", "2", "--batch-size", "16", "--seq-len", "8",
            "--device", "cpu"]  # fmt: skip
    result = runner.invoke(app, [*args, "--folds", "3", "--fold", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "best epoch" in result.output and out.exists()
    assert models.read_header(out)["provenance"]["training"]["split"]["fold"] == 1

    result = runner.invoke(app, [*args, "-o", str(out.with_name("none.safetensors"))])
    assert result.exit_code == 2  # a usage error
    assert result.output.strip().splitlines() == [
        "error: give either a validation set (--val) or --folds K --fold I"
    ]
    result = runner.invoke(
        app, [*args[:6], "jmt", *args[7:], "--val", str(labels), "-o", str(tmp_path / "x")]
    )
    assert result.exit_code == 1 and "no training videos" in result.output
    result = runner.invoke(app, [*args, "--folds", "3", "--fold", "1", "--recipe", "fast",
                                 "-o", str(tmp_path / "y")])  # fmt: skip
    assert result.exit_code == 2 and "unknown recipe 'fast'" in result.output
