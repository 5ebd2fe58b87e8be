"""Output writers: formats, NaN spelling, float precision, atomic replacement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from avemo.errors import AvemoError
from avemo.writers import get_writer


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "frame": [0, 1],
            "timestamp": [0.0, 1001 / 30000],
            "success": [1, 0],
            "face_x": [np.float32(65.01), np.nan],
        }
    )


def test_csv(tmp_path, table):
    path = get_writer("csv").write(table, tmp_path / "sub" / "v.faces.csv")
    assert path.read_text() == (
        "frame,timestamp,success,face_x\n0,0,1,65.010002\n1,0.033366667,0,NaN\n"
    )
    back = pd.read_csv(path)
    assert back["face_x"].isna().tolist() == [False, True]
    assert back["timestamp"][1] == pytest.approx(1001 / 30000, abs=1e-8)


def test_tsv(tmp_path, table):
    writer = get_writer("TSV")
    assert writer.extension == ".tsv"
    path = writer.write(table, tmp_path / "v.tsv")
    assert path.read_text().splitlines()[0] == "frame\ttimestamp\tsuccess\tface_x"


def test_unknown_format():
    with pytest.raises(AvemoError, match="unknown output format"):
        get_writer("xlsx")


def test_failed_write_keeps_the_old_file(tmp_path, table, monkeypatch):
    path = tmp_path / "v.csv"
    path.write_text("old\n")

    def fail(self, target, *args, **kwargs):
        with open(target, "w") as handle:
            handle.write("frame,time")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", fail)
    with pytest.raises(OSError):
        get_writer("csv").write(table, path)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["v.csv"]
