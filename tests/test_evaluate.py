import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import avemo
from avemo.cli import app
from avemo.errors import AvemoError
from avemo.evaluate import evaluate
from avemo.metrics import SCORE_KEYS, ccc, score
from avemo.smoothing import smooth

ROOT = Path(__file__).resolve().parents[1]
JSON_KEYS = [
    "ccc_valence",
    "ccc_arousal",
    "ccc_mean",
    "pcc_valence",
    "pcc_arousal",
    "rmse_valence",
    "rmse_arousal",
    "sagr_valence",
    "sagr_arousal",
    "n_videos",
    "n_frames",
    "n_missing",
    "pooling",
]


def traces(n, seed, offset=0.0, noise=0.2):
    """(label, prediction) N x 2 random-walk traces in [-1, 1], like annotated videos."""
    rng = np.random.default_rng(seed)
    label = np.tanh(np.cumsum(rng.normal(0, 0.08, (n, 2)), axis=0))
    pred = np.clip(label + offset + rng.normal(0, noise, (n, 2)), -1, 1)
    return label, pred


def write_labels(path, label):
    """An Aff-Wild2 label file; NaN rows become -5."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["valence,arousal"]
    lines += ["-5,-5" if np.isnan(row).any() else f"{row[0]:.17g},{row[1]:.17g}" for row in label]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_predictions(path, pred, frames=None, face_id=0, face_x=50.0):
    """An avemo annotate CSV with one face."""
    frames = np.arange(len(pred)) if frames is None else np.asarray(frames)
    data = pd.DataFrame(
        {
            "frame": frames,
            "timestamp": frames / 30,
            "face_id": face_id,
            "success": 1,
            "confidence": 0.9,
            "valence": pred[:, 0],
            "arousal": pred[:, 1],
            "face_x": face_x,
            "face_y": 20.0,
            "face_width": 40.0,
            "face_height": 50.0,
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    data.to_csv(path, index=False)
    return path


@pytest.fixture
def dataset(tmp_path):
    """Three videos whose per-video and concatenated CCC differ (one is biased)."""
    videos = {
        "v1": traces(400, 1),
        "v2": traces(250, 2, offset=0.3),  # biased predictions
        "v3": traces(150, 3, noise=0.5),
    }
    for name, (label, pred) in videos.items():
        write_labels(tmp_path / "labels" / f"{name}.txt", label)
        write_predictions(tmp_path / "pred" / f"{name}.csv", pred)
    return tmp_path / "pred", tmp_path / "labels", videos


def test_concat_and_video_pooling_differ_and_match_independent_computations(dataset):
    pred_dir, label_dir, videos = dataset
    concat = evaluate(pred_dir, label_dir).summary
    per_video = evaluate(pred_dir, label_dir, pooling="video").summary
    label = np.concatenate([v[0] for v in videos.values()])
    pred = np.concatenate([v[1] for v in videos.values()])
    expected = score(pred, label)
    for key in SCORE_KEYS:
        assert abs(concat[key] - expected[key]) < 1e-12, key
    each = [score(p, y) for y, p in videos.values()]
    for key in SCORE_KEYS:
        values = [s[key] for s in each]
        assert abs(per_video[key] - np.mean(values)) < 1e-12, key
        assert abs(per_video[f"{key}_std"] - np.std(values)) < 1e-12, key
    assert abs(concat["ccc_valence"] - per_video["ccc_valence"]) > 0.01
    assert concat["n_videos"] == per_video["n_videos"] == 3
    assert concat["n_frames"] == 800 and concat["n_missing"] == 0
    assert concat["pooling"] == "concat" and per_video["pooling"] == "video"


def test_frames_labelled_minus_5_are_dropped_not_scored_as_zero(tmp_path):
    label, pred = traces(300, 4, offset=0.2)
    label[100:160] = np.nan  # -5 in the file
    write_labels(tmp_path / "v.txt", label)
    write_predictions(tmp_path / "p" / "v.csv", pred)
    result = evaluate(tmp_path / "p", tmp_path / "v.txt").summary
    valid = ~np.isnan(label[:, 0])
    assert result["n_frames"] == 240
    assert result["ccc_valence"] == pytest.approx(ccc(pred[valid, 0], label[valid, 0]), abs=1e-12)
    # whatever is predicted for those frames does not matter
    pred[100:160] = -1.0
    write_predictions(tmp_path / "p" / "v.csv", pred)
    again = evaluate(tmp_path / "p", tmp_path / "v.txt").summary
    assert again["ccc_valence"] == result["ccc_valence"]
    # the journal code's mistake, keeping them as (0, 0) pairs, gives another number
    as_zero = np.where(np.isnan(label), 0.0, label)
    assert abs(ccc(pred[:, 0], as_zero[:, 0]) - result["ccc_valence"]) > 0.01


def test_missing_predictions_are_counted_reported_and_handled_by_policy(tmp_path):
    label, pred = traces(100, 5)
    write_labels(tmp_path / "l" / "v.txt", label)
    partial = pred[:80].copy()
    partial[10:15] = np.nan  # no face
    write_predictions(tmp_path / "p" / "v.csv", partial)
    results = {
        m: evaluate(tmp_path / "p", tmp_path / "l", missing=m) for m in ("drop", "zero", "ffill")
    }
    for result in results.values():
        assert result.summary["n_missing"] == 25
        row = result.per_video.iloc[0]
        assert row["n_missing"] == 25 and row["n_labelled"] == 100
        assert "25 of 100 labelled frames without prediction" in row["note"]
        assert any("v: 25 of 100" in note for note in result.notes)
    scored = np.r_[0:10, 15:80]
    drop = results["drop"].summary
    assert drop["n_frames"] == 75
    assert drop["ccc_valence"] == pytest.approx(ccc(pred[scored, 0], label[scored, 0]), abs=1e-12)
    zero = np.where(
        np.isnan(np.r_[partial, np.full((20, 2), np.nan)]), 0.0, np.r_[partial, pred[80:]]
    )
    assert results["zero"].summary["n_frames"] == 100
    assert results["zero"].summary["ccc_arousal"] == pytest.approx(ccc(zero[:, 1], label[:, 1]))
    filled = np.r_[partial, np.full((20, 2), np.nan)]
    filled[10:15], filled[80:] = partial[9], partial[79]
    assert results["ffill"].summary["ccc_valence"] == pytest.approx(ccc(filled[:, 0], label[:, 0]))


def test_extra_predicted_frames_are_ignored_and_reported(tmp_path):
    label, pred = traces(60, 6)
    write_labels(tmp_path / "l" / "v.txt", label)
    longer = np.r_[pred, np.zeros((7, 2))]
    write_predictions(tmp_path / "p" / "v.csv", longer)
    result = evaluate(tmp_path / "p", tmp_path / "l")
    assert result.per_video.iloc[0]["n_extra"] == 7
    assert "7 predicted frames without a label line (ignored)" in result.per_video.iloc[0]["note"]
    assert result.summary["ccc_valence"] == pytest.approx(ccc(pred[:, 0], label[:, 0]))


def test_a_labelled_video_without_predictions_is_missing(dataset):
    pred_dir, label_dir, videos = dataset
    write_labels(label_dir / "v4.txt", traces(90, 7)[0])
    result = evaluate(pred_dir, label_dir)
    assert result.summary["n_videos"] == 3 and result.summary["n_missing"] == 90
    row = result.per_video.set_index("video").loc["v4"]
    assert row["prediction_file"] == "" and row["n_frames"] == 0
    assert "no prediction file" in row["note"]
    zero = evaluate(pred_dir, label_dir, missing="zero").summary
    assert zero["n_videos"] == 4 and zero["n_frames"] == 890


def test_smooth_applies_the_reference_filter_to_predictions_before_scoring(tmp_path):
    label, pred = traces(500, 8, noise=0.4)
    write_labels(tmp_path / "l" / "v.txt", label)
    write_predictions(tmp_path / "p" / "v.csv", pred)
    raw = evaluate(tmp_path / "p", tmp_path / "l").summary
    smoothed = evaluate(tmp_path / "p", tmp_path / "l", smooth=True).summary
    expected = score(smooth(pred), label)
    assert smoothed["ccc_valence"] == pytest.approx(expected["ccc_valence"], abs=1e-12)
    assert smoothed["ccc_arousal"] == pytest.approx(expected["ccc_arousal"], abs=1e-12)
    assert smoothed["ccc_mean"] > raw["ccc_mean"]  # noise averages out


def test_left_and_right_labels_take_the_faces_of_one_avemo_csv(tmp_path):
    left_label, left_pred = traces(120, 9)
    right_label, right_pred = traces(120, 10)
    write_labels(tmp_path / "l" / "video5_left.txt", left_label)
    write_labels(tmp_path / "l" / "video5_right.txt", right_label)
    right = write_predictions(tmp_path / "a.csv", right_pred, face_id=0, face_x=400.0)
    left = write_predictions(tmp_path / "b.csv", left_pred, face_id=1, face_x=30.0)
    both = pd.concat([pd.read_csv(right), pd.read_csv(left)]).sort_values(["frame", "face_id"])
    (tmp_path / "p").mkdir()
    both.to_csv(tmp_path / "p" / "video5.csv", index=False)
    result = evaluate(tmp_path / "p", tmp_path / "l", pooling="video")
    rows = result.per_video.set_index("video")
    assert rows.loc["video5_left", "face_id"] == 1 and rows.loc["video5_right", "face_id"] == 0
    expected = ccc(left_pred[:, 0], left_label[:, 0])
    assert rows.loc["video5_left", "ccc_valence"] == pytest.approx(expected, abs=1e-12)
    # a plain label name needs --face-id when the CSV has two faces per frame
    write_labels(tmp_path / "l2" / "video5.txt", left_label)
    with pytest.raises(AvemoError, match="--face-id"):
        evaluate(tmp_path / "p", tmp_path / "l2")
    chosen = evaluate(tmp_path / "p", tmp_path / "l2", face_id=1).summary
    assert chosen["ccc_valence"] == pytest.approx(expected, abs=1e-12)


def test_challenge_files_as_predictions(tmp_path):
    label, pred = traces(50, 11)
    write_labels(tmp_path / "l" / "v.txt", label)
    lines = ["image_location,valence,arousal"]
    lines += [f"v/{i + 1:05d}.jpg,{v:.17g},{a:.17g}" for i, (v, a) in enumerate(pred)]
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "v.txt").write_text("\n".join(lines) + "\n")
    result = evaluate(tmp_path / "p", tmp_path / "l").summary
    assert result["ccc_valence"] == pytest.approx(ccc(pred[:, 0], label[:, 0]), abs=1e-12)


def test_bootstrap_is_seeded_and_agrees_with_a_direct_resampling(dataset):
    pred_dir, label_dir, videos = dataset
    first = evaluate(pred_dir, label_dir, bootstrap=50, seed=3).summary
    again = evaluate(pred_dir, label_dir, bootstrap=50, seed=3).summary
    other = evaluate(pred_dir, label_dir, bootstrap=50, seed=4).summary
    assert first == again and first != other
    assert first["bootstrap"] == 50 and first["seed"] == 3
    for key in SCORE_KEYS:
        assert first[f"{key}_ci_low"] <= first[f"{key}_ci_high"]
    # the same resamples, scored the slow way: concatenate the drawn videos' frames
    pairs = list(videos.values())
    counts = np.random.default_rng(3).multinomial(3, np.full(3, 1 / 3), size=50)
    replicates = []
    for row in counts:
        drawn = [pairs[i] for i in range(3) for _ in range(row[i])]
        label = np.concatenate([y for y, _ in drawn])
        pred = np.concatenate([p for _, p in drawn])
        replicates.append(score(pred, label)["ccc_valence"])
    low, high = np.percentile(replicates, [2.5, 97.5])
    assert first["ccc_valence_ci_low"] == pytest.approx(low, abs=1e-9)
    assert first["ccc_valence_ci_high"] == pytest.approx(high, abs=1e-9)
    video = evaluate(pred_dir, label_dir, pooling="video", bootstrap=50, seed=3).summary
    per = [score(p, y)["ccc_arousal"] for y, p in pairs]
    means = [np.dot(row, per) / row.sum() for row in counts]
    assert video["ccc_arousal_ci_low"] == pytest.approx(np.percentile(means, 2.5), abs=1e-12)


def test_outputs_json_keys_per_video_csv_and_plots(dataset, tmp_path):
    pred_dir, label_dir, _ = dataset
    result = evaluate(
        pred_dir, label_dir, per_video=tmp_path / "out" / "per_video.csv", plots=tmp_path / "plots"
    )
    summary = json.loads(result.to_json())
    assert list(summary) == JSON_KEYS
    table = pd.read_csv(tmp_path / "out" / "per_video.csv")
    assert table["video"].tolist() == ["v1", "v2", "v3"]
    assert {"label_file", "prediction_file", "n_frames", "n_missing", *SCORE_KEYS} <= set(table)
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == ["v1.png", "v2.png", "v3.png", "va_scatter.png"]
    for png in (tmp_path / "plots").iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = result.table()
    assert "CCC" in text and "valence" in text and f"{summary['ccc_mean']:.4f}" in text
    boot = json.loads(evaluate(pred_dir, label_dir, bootstrap=10).to_json())
    extra = set(boot) - set(JSON_KEYS)
    assert extra == {f"{k}_ci_{s}" for k in SCORE_KEYS for s in ("low", "high")} | {
        "bootstrap",
        "seed",
    }


def test_degenerate_videos_give_documented_values_not_crashes(tmp_path):
    label, pred = traces(80, 12)
    write_labels(tmp_path / "l" / "long.txt", label)
    write_predictions(tmp_path / "p" / "long.csv", pred)
    write_labels(tmp_path / "l" / "short.txt", label[:1])
    write_predictions(tmp_path / "p" / "short.csv", pred[:1])
    write_labels(tmp_path / "l" / "flat.txt", label[:30])
    write_predictions(tmp_path / "p" / "flat.csv", np.full((30, 2), 0.2))  # constant predictions
    video = evaluate(tmp_path / "p", tmp_path / "l", pooling="video")
    rows = video.per_video.set_index("video")
    assert np.isnan(rows.loc["short", "ccc_valence"])
    assert "fewer than 2 frames" in rows.loc["short", "note"]
    assert rows.loc["flat", "ccc_valence"] == 0.0 and rows.loc["flat", "pcc_arousal"] == 0.0
    expected = np.mean([rows.loc["long", "ccc_valence"], 0.0])  # the 1-frame video is left out
    assert video.summary["ccc_valence"] == pytest.approx(expected)
    assert "n/a" not in video.table()
    single = evaluate(tmp_path / "p" / "short.csv", tmp_path / "l" / "short.txt")
    assert json.loads(single.to_json())["ccc_valence"] is None
    assert "n/a" in single.table() and "undefined (fewer than 2 frames" in single.table()


def test_in_memory_tables():
    label, pred = traces(70, 13)
    labels = {"a": pd.DataFrame({"valence": label[:, 0], "arousal": label[:, 1]})}
    preds = {
        "a": pd.DataFrame({"frame": np.arange(70), "valence": pred[:, 0], "arousal": pred[:, 1]})
    }
    result = avemo.evaluate(preds, labels)
    assert result.summary["ccc_arousal"] == pytest.approx(ccc(pred[:, 1], label[:, 1]))
    assert result.per_video.iloc[0]["prediction_file"] == "a"


def test_inputs_that_cannot_be_scored_raise_one_clear_error(dataset, tmp_path):
    pred_dir, label_dir, _ = dataset
    with pytest.raises(AvemoError, match="no prediction matches a label file"):
        evaluate(label_dir / "v1.txt", tmp_path / "labels" / "v2.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AvemoError, match="no label files found"):
        evaluate(pred_dir, tmp_path / "empty")
    wrong = tmp_path / "wrong" / "v1.txt"
    wrong.parent.mkdir()
    wrong.write_text("valence,arousal\n0.5,0.5\n3.0,0.1\n")
    with pytest.raises(
        AvemoError, match=r"v1.txt: label valence 3 at frame 1 is outside \[-1, 1\]"
    ):
        evaluate(pred_dir, wrong)
    with pytest.raises(AvemoError, match="unknown pooling"):
        evaluate(pred_dir, label_dir, pooling="mean")


def run_cli(*args):
    return CliRunner().invoke(app, ["evaluate", *map(str, args)])


def test_cli_prints_the_table_and_writes_every_output(dataset, tmp_path):
    pred_dir, label_dir, _ = dataset
    out = tmp_path / "out"
    result = run_cli(
        pred_dir, label_dir, "--pooling", "video", "--bootstrap", "20", "--seed", "1",
        "--json", out / "s.json", "--per-video", out / "v.csv", "--plots", out / "plots",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "mean ± std over videos" in result.stdout and "bootstrap interval" in result.stdout
    summary = json.loads((out / "s.json").read_text())
    assert summary["pooling"] == "video" and summary["n_videos"] == 3
    assert summary["ccc_mean"] == pytest.approx(
        evaluate(pred_dir, label_dir, pooling="video").summary["ccc_mean"]
    )
    assert len(pd.read_csv(out / "v.csv")) == 3 and (out / "plots" / "va_scatter.png").exists()


def test_cli_bad_files_and_usage_errors(dataset, tmp_path):
    pred_dir, label_dir, _ = dataset
    bad = tmp_path / "bad" / "v1.txt"
    bad.parent.mkdir()
    bad.write_text("valence,arousal\n0.1,zero\n")
    result = run_cli(pred_dir, bad)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {bad}: line 2: arousal is not a number: 'zero'"
    ]
    assert "Traceback" not in result.output
    assert run_cli(pred_dir, tmp_path / "missing").exit_code == 2
    assert run_cli(pred_dir, label_dir, "--pooling", "mean").exit_code == 2
    assert run_cli(pred_dir, label_dir, "--columns", "valence").exit_code == 2
    assert run_cli(pred_dir, label_dir, "--bootstrap", "-1").exit_code == 2


def test_import_avemo_stays_light_and_exports_evaluate():
    code = (
        "import sys, avemo\n"
        "assert 'torch' not in sys.modules and 'pandas' not in sys.modules\n"
        "import avemo.evaluate\n"
        "from avemo.evaluate import Result\n"
        "assert callable(avemo.evaluate) and avemo.evaluate.__name__ == 'evaluate'\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_smooth_reads_annotate_raw_columns_so_the_filter_runs_once(tmp_path):
    rng = np.random.default_rng(7)
    label = np.tanh(np.cumsum(rng.normal(0, 0.08, (300, 2)), axis=0))
    raw = np.clip(label + rng.normal(0, 0.3, label.shape), -1, 1)
    write_labels(tmp_path / "labels" / "v.txt", label)
    path = write_predictions(tmp_path / "pred" / "v.csv", smooth(raw))
    table = pd.read_csv(path)
    table["valence_raw"], table["arousal_raw"] = raw[:, 0], raw[:, 1]
    table.to_csv(path, index=False)
    once = evaluate(tmp_path / "pred", tmp_path / "labels", smooth=True).summary
    plain = evaluate(tmp_path / "pred", tmp_path / "labels").summary
    expected = score(smooth(raw), label)
    for key in ("ccc_valence", "ccc_arousal"):
        assert once[key] == pytest.approx(expected[key], abs=1e-9)
        assert plain[key] == pytest.approx(expected[key], abs=1e-9)  # annotate's smoothed columns
