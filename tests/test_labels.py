import numpy as np
import pandas as pd
import pytest

from avemo.errors import AvemoError
from avemo.labels import (
    as_table,
    detect_format,
    find_files,
    read_affwild2,
    read_avemo,
    read_challenge,
    read_generic,
    read_table,
    split_side,
)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def avemo_csv(path, rows):
    """An avemo annotate CSV from (frame, face_id, valence, arousal, face_x) rows."""
    frame = pd.DataFrame(rows, columns=["frame", "face_id", "valence", "arousal", "face_x"])
    frame.insert(1, "timestamp", frame["frame"] / 30)
    frame.insert(3, "success", (frame["face_id"] >= 0).astype(int))
    frame.insert(4, "confidence", np.where(frame["face_id"] >= 0, 0.9, np.nan))
    frame["face_y"], frame["face_width"], frame["face_height"] = 10.0, 40.0, 50.0
    frame.loc[frame["face_id"] < 0, ["face_x", "face_y", "face_width", "face_height"]] = np.nan
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def test_affwild2_label_file_lines_are_frames_and_minus_5_is_invalid(tmp_path):
    path = write(tmp_path / "video1.txt", "valence,arousal\n0.1,0.2\n-5,-5\n-0.3,0.45\n")
    table = read_affwild2(path)
    assert detect_format(path) == "affwild2"
    assert table.index.tolist() == [0, 1, 2] and table.index.name == "frame"
    assert list(table.columns) == ["valence", "arousal"]
    assert table.loc[0].tolist() == [0.1, 0.2] and table.loc[2].tolist() == [-0.3, 0.45]
    assert table.loc[1].isna().all()


def test_challenge_file_image_numbers_are_one_based(tmp_path):
    text = "image_location,valence,arousal\nvid/00001.jpg,0.1,0.2\nvid/00003.jpg,0.3,-0.4\n"
    path = write(tmp_path / "vid.txt", text)
    assert detect_format(path) == "challenge"
    table = read_challenge(path)
    assert table.index.tolist() == [0, 2]
    assert table.loc[2].tolist() == [0.3, -0.4]
    mixed = write(tmp_path / "mixed.txt", text + "other/00002.jpg,0,0\n")
    with pytest.raises(AvemoError, match="several videos"):
        read_challenge(mixed)
    bad = write(tmp_path / "bad.txt", "image_location,valence,arousal\nvid/first.jpg,0.1,0.2\n")
    with pytest.raises(AvemoError, match=r"line 2: .*NNNNN\.jpg"):
        read_challenge(bad)


def test_generic_csv_any_column_order_and_case(tmp_path):
    path = write(tmp_path / "x.csv", "Arousal, Frame, Valence\n0.5,3,0.1\n-0.2,0,0.3\n")
    assert detect_format(path) == "generic"
    table = read_generic(path)
    assert table.index.tolist() == [0, 3]
    assert table.loc[3].tolist() == [0.1, 0.5]
    raw = write(tmp_path / "raw.csv", "frame,valence_raw,arousal_raw\n0,0.25,0.5\n")
    assert read_table(raw, columns=("valence_raw", "arousal_raw")).loc[0].tolist() == [0.25, 0.5]
    with pytest.raises(AvemoError, match="no valence, arousal column"):
        read_table(raw)


def test_avemo_csv_with_one_face_per_frame_is_read_whole(tmp_path):
    rows = [(0, 2, 0.1, 0.2, 10), (1, -1, np.nan, np.nan, np.nan), (2, 5, 0.3, 0.4, 12)]
    path = avemo_csv(tmp_path / "one.csv", rows)  # the track id changed: still one face a frame
    assert detect_format(path) == "avemo"
    table = read_table(path)
    assert table.index.tolist() == [0, 1, 2]
    assert table.loc[1].isna().all() and table.loc[2].tolist() == [0.3, 0.4]
    assert table.attrs["face_id"] is None


def two_faces(tmp_path):
    rows = []
    for frame in range(6):
        rows.append((frame, 0, 0.5, 0.5, 300.0))  # the person on the right of the image
        if frame != 4:  # face 1 not seen in frame 4
            rows.append((frame, 1, -0.5, -0.1, 20.0))
    return avemo_csv(tmp_path / "two.csv", rows)


def test_avemo_csv_with_several_faces_needs_a_choice(tmp_path):
    path = two_faces(tmp_path)
    with pytest.raises(AvemoError, match="several faces per frame.*--face-id"):
        read_table(path)
    table = read_avemo(path, face_id=1)
    assert table.index.tolist() == list(range(6)) and table.attrs["face_id"] == 1
    assert table.loc[4].isna().all() and table.loc[0].tolist() == [-0.5, -0.1]
    with pytest.raises(AvemoError, match=r"no face id 7 \(ids: 0, 1\)"):
        read_avemo(path, face_id=7)


def test_left_and_right_are_chosen_by_the_box_centre(tmp_path):
    path = two_faces(tmp_path)
    left, right = read_table(path, side="left"), read_table(path, side="right")
    assert left.attrs["face_id"] == 1 and left.loc[0].tolist() == [-0.5, -0.1]
    assert right.attrs["face_id"] == 0 and right.loc[0].tolist() == [0.5, 0.5]
    single = avemo_csv(tmp_path / "single.csv", [(0, 0, 0.1, 0.1, 5.0), (1, 0, 0.2, 0.2, 5.0)])
    with pytest.raises(AvemoError, match="1 face track.*--max-faces 2"):
        read_table(single, side="left")
    affwild2 = write(tmp_path / "labels.txt", "valence,arousal\n0,0\n")
    with pytest.raises(AvemoError, match="no face boxes"):
        read_table(affwild2, side="right")


def test_left_right_uses_the_two_most_predicted_tracks(tmp_path):
    rows = [(f, 0, 0.1, 0.1, 400.0) for f in range(10)]  # right
    rows += [(f, 1, 0.2, 0.2, 100.0) for f in range(10)]  # left
    rows += [(f, 2, 0.3, 0.3, 0.0) for f in range(3)]  # a short spurious track further left
    path = avemo_csv(tmp_path / "three.csv", rows)
    assert read_avemo(path, side="left").attrs["face_id"] == 1
    assert read_avemo(path, side="right").attrs["face_id"] == 0


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty file"),
        ("name,age\nx,3\n", "unrecognised header"),
        ("valence,arousal\n0.1,0.2\n0.3,abc\n", "line 3: arousal is not a number: 'abc'"),
        ("valence,arousal\n0.1,0.2,0.3\n", "malformed CSV"),
        ("frame,valence,arousal\n0,0.1,0.2\n0,0.3,0.4\n", "frame 0 appears twice"),
        ("frame,valence,arousal\n0.5,0.1,0.2\n", "line 2: bad frame number"),
        ("frame,valence,arousal\n-1,0.1,0.2\n", "line 2: bad frame number"),
        ("frame,arousal\n0,0.1\n", "no valence column"),
    ],
)
def test_bad_files_give_one_clear_line_naming_the_file(tmp_path, text, message):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(AvemoError, match=message) as caught:
        read_table(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


def test_binary_file_is_not_a_text_file(tmp_path):
    path = tmp_path / "garbage.csv"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(AvemoError, match="not a text file"):
        read_table(path)


def test_find_files_searches_folders_and_skips_other_files(tmp_path):
    write(tmp_path / "Validation_Set" / "a.txt", "valence,arousal\n0,0\n")
    write(tmp_path / "Validation_Set" / "sub" / "b_left.txt", "valence,arousal\n0,0\n")
    write(tmp_path / "x.faces.csv", "frame,timestamp,face_id,success\n0,0,0,1\n")
    write(tmp_path / "x.json", "{}")
    found = find_files(tmp_path)
    assert sorted(found) == ["a", "b_left"]
    assert found["b_left"] == tmp_path / "Validation_Set" / "sub" / "b_left.txt"
    assert find_files(found["a"]) == {"a": found["a"]}
    write(tmp_path / "other" / "a.csv", "frame,valence,arousal\n0,0,0\n")
    with pytest.raises(AvemoError, match="two files for video 'a'"):
        find_files(tmp_path)
    with pytest.raises(AvemoError, match="no such file or folder"):
        find_files(tmp_path / "missing")


def test_split_side_and_in_memory_tables():
    assert split_side("video10_1_left") == ("video10_1", "left")
    assert split_side("video10_1_right") == ("video10_1", "right")
    assert split_side("video10_1") is None and split_side("_left") is None
    data = pd.DataFrame({"frame": [2, 0], "valence": [0.1, -5.0], "arousal": [0.2, -5.0]})
    table = as_table(data, "mine")
    assert table.index.tolist() == [0, 2] and table.loc[0].isna().all()
    with pytest.raises(AvemoError, match="mine: no arousal column"):
        as_table(pd.DataFrame({"valence": [0.1]}), "mine")


def test_one_left_right_rule_for_writing_and_reading_pairs(tmp_path):
    """annotate's abaw pair and evaluate's reading of a CSV against _left/_right labels use the
    same rule: the face written to <video>_left.txt is the one read for a _left label."""
    import pandas as pd

    from avemo.labels import left_right, read_avemo
    from avemo.writers import get_writer

    n = 40
    rows = []
    for face, x, value in ((0, 400.0, 0.5), (1, 100.0, -0.5), (2, 250.0, 0.9)):
        for frame in range(n if face < 2 else 5):  # face 2: a short track in the middle
            rows.append({"frame": frame, "face_id": face, "face_x": x + frame, "face_width": 50.0,
                         "valence": value, "arousal": value})  # fmt: skip
    table = pd.DataFrame(rows).sort_values(["frame", "face_id"], ignore_index=True)
    assert left_right(table) == (1, 0)  # the two longest tracks, by box centre
    table.to_csv(tmp_path / "pair.csv", index=False)
    left = read_avemo(tmp_path / "pair.csv", side="left")
    right = read_avemo(tmp_path / "pair.csv", side="right")
    assert left.attrs["face_id"] == 1 and right.attrs["face_id"] == 0
    two = table[table["face_id"] < 2]
    written = get_writer("abaw").write(two, tmp_path / "pair.txt")
    assert [p.name for p in written] == ["pair_left.txt", "pair_right.txt"]
    assert ",-0.500000,-0.500000" in written[0].read_text()  # face 1 (x ~ 100) is on the left
