"""evaluate never ignores or misreads a file silently: unreadable or unknown files inside a folder,
absurd frame numbers, non-finite values and JSON that must stay JSON."""

from __future__ import annotations

import json
import os
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from avemo.cli import app
from avemo.errors import AvemoError
from avemo.evaluate import _align, evaluate
from avemo.smoothing import smooth


def cli(*args):
    return CliRunner().invoke(app, ["evaluate", *map(str, args)])


def strict_json(text: str) -> dict:
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def pair(tmp_path):
    """A label folder and a prediction folder with two matching videos."""
    rng = np.random.default_rng(0)
    labels, preds = tmp_path / "labels", tmp_path / "preds"
    labels.mkdir()
    preds.mkdir()
    for name in ("a", "b"):
        values = np.round(rng.uniform(-1, 1, (40, 2)), 3)
        rows = "\n".join(f"{v},{a}" for v, a in values)
        (labels / f"{name}.txt").write_text("valence,arousal\n" + rows + "\n")
        rows = "\n".join(f"{i},{v * 0.9:.4f},{a * 0.9:.4f}" for i, (v, a) in enumerate(values))
        (preds / f"{name}.csv").write_text("frame,valence,arousal\n" + rows + "\n")
    return preds, labels


def assert_one_error_line(result, name):
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and name in lines[0], result.output
    assert "Traceback" not in result.output


# --- files in folders -----------------------------------------------------------------------------


def unknown_header(path):
    path.write_text("name,age\nx,3\n")


def binary(path):
    path.write_bytes(bytes(range(256)) * 4)


def empty(path):
    path.write_bytes(b"")


def broken_link(path):
    path.symlink_to(path.with_name("nowhere.csv"))


def fifo(path):
    os.mkfifo(path)


def blank_header(path):
    path.write_text("\n\n1,2\n")


@pytest.mark.parametrize("make", [unknown_header, binary, empty, broken_link, fifo, blank_header])
@pytest.mark.parametrize("side", ["preds", "labels"])
def test_a_bad_file_in_a_folder_is_an_error_naming_it(pair, make, side):
    preds, labels = pair
    folder = preds if side == "preds" else labels
    bad = folder / "sub" / ("b.csv" if side == "preds" else "c.txt")
    bad.parent.mkdir()
    if side == "preds":
        (preds / "b.csv").unlink()  # the prediction of b is the bad file: never "no prediction"
    make(bad)
    assert_one_error_line(cli(preds, labels), bad.name)
    with pytest.raises(AvemoError, match=bad.name):
        evaluate(preds, labels)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_in_a_folder_is_an_error(pair):
    preds, labels = pair
    (preds / "b.csv").chmod(0)
    assert_one_error_line(cli(preds, labels), "b.csv")


def test_folders_in_folders_and_other_suffixes_are_still_fine(pair):
    preds, labels = pair
    (preds / "x.csv").mkdir()  # a folder with a data-like name is searched, not read
    (preds / "a.json").write_text("{}")
    (preds / "a.faces.csv").write_text("frame,timestamp,face_id,success\n0,0,0,1\n")
    result = cli(preds, labels)
    assert result.exit_code == 0, result.output
    assert "2 videos, 80 frames scored" in result.output


# --- frame numbers: memory follows the rows -----------------------------------------------------


@pytest.mark.parametrize("frame", [200_000_000, 10**12, 2**53])
@pytest.mark.parametrize("where", ["preds", "labels"])
@pytest.mark.parametrize("options", [{}, {"smooth": True, "missing": "ffill"}, {"missing": "zero"}])
def test_one_huge_frame_number_costs_no_memory(pair, frame, where, options):
    preds, labels = pair
    if where == "preds":
        with open(preds / "a.csv", "a") as handle:
            handle.write(f"{frame},0.5,0.5\n")
    else:
        (labels / "a.txt").unlink()
        rows = "\n".join(f"{i},0.1,0.2" for i in range(40))
        (labels / "a.csv").write_text(f"frame,valence,arousal\n{rows}\n{frame},0.3,0.4\n")
    tracemalloc.start()
    try:
        result = evaluate(preds, labels, **options)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20  # the dense timeline would be frame * 16 bytes: 3.2 GB and more
    row = result.per_video.set_index("video").loc["a"]
    if where == "preds":
        assert row["n_extra"] == 1 and row["n_frames"] == 40
    else:
        expected_missing = 0 if options.get("missing") in ("zero", "ffill") else 1
        assert result.summary["n_missing"] == 1
        assert row["n_frames"] == 40 + 1 - expected_missing


@pytest.mark.parametrize(
    "text, words",
    [
        ("frame,valence,arousal\n100000000000000000000,0.1,0.1\n", ["bad frame number"]),
        ("frame,valence,arousal\n1e400,0.1,0.1\n", ["frame is not a finite number"]),
        ("frame,valence,arousal\n-3,0.1,0.1\n", ["bad frame number"]),
        ("image_location,valence,arousal\na/99999999999999999999999.jpg,0.1,0.1\n", ["image"]),
    ],
)
def test_absurd_frame_numbers_are_an_error_naming_the_file(pair, text, words):
    preds, labels = pair
    (preds / "a.csv").write_text(text)
    result = cli(preds / "a.csv", labels / "a.txt")
    assert_one_error_line(result, "a.csv")
    for word in words:
        assert word in result.output


def test_sparse_smoothing_equals_the_dense_filter():
    rng = np.random.default_rng(3)
    for trial in range(20):
        last = int(rng.integers(5, 400))
        known = np.sort(rng.choice(last + 1, size=int(rng.integers(1, last + 1)), replace=False))
        values = rng.uniform(-1, 1, (len(known), 2))
        values[rng.random(len(known)) < 0.2] = np.nan
        labelled = np.arange(last + 1)
        label = pd.DataFrame(
            rng.uniform(-1, 1, (last + 1, 2)), columns=["valence", "arousal"], index=labelled
        )
        pred = pd.DataFrame(values, columns=["valence", "arousal"], index=known)
        dense = np.full((last + 1, 2), np.nan)
        dense[known] = values
        expected = smooth(dense)
        for missing in ("drop", "zero", "ffill"):
            frames, _, got, n_missing, _ = _align(label, pred, smooth=True, missing=missing)
            want = expected.copy()
            assert n_missing == int(np.isnan(want).any(axis=1).sum()), trial
            if missing == "ffill":
                want = pd.DataFrame(want).ffill().to_numpy()
            if missing != "drop":
                want = np.nan_to_num(want, nan=0.0)
            np.testing.assert_allclose(got, want[frames], atol=1e-12, err_msg=str(trial))


# --- values -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("where", ["preds", "labels"])
def test_infinite_values_are_an_error_naming_the_file(pair, value, where):
    preds, labels = pair
    if where == "preds":
        path = preds / "a.csv"
        path.write_text(f"frame,valence,arousal\n0,{value},0.1\n1,0.1,0.1\n")
    else:
        path = labels / "a.txt"
        path.write_text(f"valence,arousal\n0.1,{value}\n0.2,0.2\n")
    result = cli(preds, labels, "--json", preds.parent / "out.json")
    assert_one_error_line(result, path.name)
    assert "finite" in result.output
    assert not (preds.parent / "out.json").exists()


@pytest.mark.parametrize("value", ["abc", "0.1.2", "--1", "0x1p3"])
def test_non_numeric_values_are_an_error_naming_the_file(pair, value):
    preds, labels = pair
    path = preds / "b.csv"
    path.write_text(f"frame,valence,arousal\n0,0.1,{value}\n")
    result = cli(preds, labels)
    assert_one_error_line(result, "b.csv")
    assert "not a number" in result.output


def test_in_memory_tables_with_infinite_values_are_refused():
    label = pd.DataFrame({"frame": [0, 1], "valence": [0.1, 0.2], "arousal": [0.1, 0.2]})
    pred = label.assign(valence=[np.inf, 0.1])
    with pytest.raises(AvemoError, match="finite"):
        evaluate({"v": pred}, {"v": label})


@pytest.mark.parametrize(
    "pred_values",
    [
        [[1e308, -1e308], [-1e308, 1e308], [1e308, 1e308]],  # finite, but the metrics overflow
        [[0.5, 0.5], [np.nan, np.nan], [np.nan, np.nan]],  # one scored frame: CCC undefined
        [[0.2, 0.2], [0.2, 0.2], [0.2, 0.2]],  # constant
    ],
)
def test_json_is_always_strict_json(tmp_path, pred_values):
    labels, preds = tmp_path / "l.txt", tmp_path / "l.csv"
    labels.write_text("valence,arousal\n0.1,0.2\n-0.3,0.4\n0.5,-0.6\n")
    rows = "\n".join(f"{i},{v!r},{a!r}" for i, (v, a) in enumerate(pred_values))
    preds.write_text("frame,valence,arousal\n" + rows.replace("nan", "") + "\n")
    out = tmp_path / "summary.json"
    result = cli(preds, labels, "--json", out, "--bootstrap", 20, "--pooling", "video")
    assert result.exit_code == 0, result.output
    assert "Warning" not in result.output
    summary = strict_json(out.read_text())
    assert summary["n_frames"] >= 1
    for value in summary.values():
        assert value is None or not isinstance(value, float) or np.isfinite(value)
