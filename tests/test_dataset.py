"""Training data: dense L-clip sequences with masks, labels, validation lists, folds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avemo import dataset as D
from avemo.cache import Features
from avemo.clips import CLIP_WINDOW
from avemo.errors import AvemoError
from avemo.labels import pair_base


def test_sequences_cover_every_frame_once_and_mask_invalid_labels():
    n, dim = 300, 3
    audio = np.arange(n * dim, dtype=np.float32).reshape(n, dim)
    features = Features("v", audio, -audio, np.arange(1, n + 1), np.ones(n, bool))
    labels = np.tile(np.linspace(-1, 1, 280, dtype=np.float32)[:, None], (1, 2))  # 20 short
    labels[10, 0] = np.nan  # invalid valence only
    labels[11] = np.nan
    dataset = D.SequenceDataset([D.Video(features, labels)], seq_len=4)
    seen = np.zeros(n, int)
    for i in range(len(dataset)):
        a, v, target, mask = dataset[i]
        ends = dataset.index[i][1]
        assert a.shape == (4, dim) and target.shape == mask.shape == (4, 2)
        assert np.all(np.diff(ends) == CLIP_WINDOW)
        inside = ends < n
        seen[ends[inside]] += 1
        assert torch.equal(a[inside], torch.from_numpy(audio[ends[inside]]))
        assert torch.equal(v[inside], -a[inside])
        assert not a[~inside].any()  # padding past the end: zeros, never scored
        for k, e in enumerate(ends):
            expected = (
                [e < 280 and not np.isnan(labels[e, d]) for d in range(2)] if e < n else [0, 0]
            )
            assert mask[k].tolist() == [bool(x) for x in expected]
            if mask[k, 0]:
                assert target[k, 0] == labels[e, 0]
    assert (seen == 1).all()


def test_folds_are_disjoint_cover_every_video_and_keep_pairs_together():
    names = [f"v{i}" for i in range(9)] + ["p_left", "p_right", "q_left", "q_right"]
    folds = D.split_folds(names, 5, seed=0)
    assert sorted(sum(folds, [])) == sorted(names)
    for fold in folds:
        assert ("p_left" in fold) == ("p_right" in fold)
        assert ("q_left" in fold) == ("q_right" in fold)
    assert D.split_folds(list(reversed(names)), 5, seed=0) == folds
    assert D.split_folds(names, 5, seed=1) != folds
    with pytest.raises(AvemoError, match="cannot make"):
        D.split_folds(["a", "b"], 3)


def test_labels_read_minus_five_as_missing_and_validation_lists_name_videos(tmp_path):
    folder = tmp_path / "Validation_Set"
    folder.mkdir()
    (folder / "a.txt").write_text("valence,arousal\n0.5,-0.25\n-5,-5\n0.1,0.2\n")
    (folder / "b_left.txt").write_text("valence,arousal\n0.3,0.3\n")
    labels = D.read_labels(folder / "a.txt")
    assert labels.shape == (3, 2) and np.isnan(labels[1]).all()
    assert labels[0].tolist() == [0.5, -0.25]
    found = D.label_files([tmp_path])
    assert sorted(found) == ["a", "b_left"]
    assert D.validation_names(folder, {}) == ["a", "b_left"]
    listing = tmp_path / "val.txt"
    listing.write_text("b_left\na.txt\n\n")
    assert D.validation_names(listing, found) == ["a", "b_left"]
    assert D.validation_names(["a"], found) == ["a"]
    with pytest.raises(AvemoError, match="'c' has no label file"):
        D.validation_names(["c"], found)
    with pytest.raises(AvemoError, match="no such validation folder or list file"):
        D.validation_names(tmp_path / "nope", found)
    assert pair_base("b_left") == pair_base("b_right") == "b"
    assert pair_base("left") == "left" and pair_base("a") == "a"


def test_predictions_cover_every_frame_of_the_cache_in_order():
    n = 100
    audio = np.arange(n, dtype=np.float32)[:, None].repeat(2, 1)
    features = Features("v", audio, audio, np.arange(1, n + 1), np.ones(n, bool))

    class Echo(torch.nn.Module):  # returns each clip's audio feature as its prediction
        def forward(self, audio, visual):
            return audio

    out = D.predict_video(Echo(), features, seq_len=4, batch_size=3)
    assert np.array_equal(out[:, 0], np.arange(n))


def test_videos_are_found_in_the_cache_by_name_and_ambiguity_is_an_error(tmp_path):
    from avemo.cache import write_features

    features = Features(
        "clip", np.zeros((5, 2)), np.zeros((5, 3)), np.arange(1, 6), np.ones(5, bool)
    )
    for folder in ("day1", "day2"):
        write_features(tmp_path / "cache" / folder / "clip.npz", features)
    write_features(tmp_path / "cache" / "day1" / "other.npz", features)
    labels = tmp_path / "other.txt"
    labels.write_text("valence,arousal\n0.1,0.2\n0.3,0.4\n")
    (video,) = D.load_videos(tmp_path / "cache", {"other": labels, "clip": labels}, ["other"])
    assert video.name == "other" and video.features.visual.shape == (5, 3)
    assert video.labels.shape == (2, 2)
    (video,) = D.load_videos(tmp_path / "cache", {"day2/clip": labels}, ["day2/clip"])
    assert video.name == "clip"
    with pytest.raises(AvemoError, match="'clip' has labels but 2 cached feature files"):
        D.load_videos(tmp_path / "cache", {"clip": labels}, ["clip"])
    with pytest.raises(AvemoError, match="'none' has labels but no cached features"):
        D.load_videos(tmp_path / "cache", {"none": labels}, ["none"])
