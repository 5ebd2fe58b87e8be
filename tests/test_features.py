"""The feature engine: what ``avemo extract`` caches is what ``avemo annotate`` computes.

Train/serve parity on a real clip (carphone with a speech-like audio track): the features cached
for training equal those annotate feeds the fusion head, and the head applied to the cached
features gives annotate's raw per-frame values.
"""

from __future__ import annotations

import numpy as np
import pytest
import tiny  # tests/tiny.py: small registered backbones
import torch

from avemo import models
from avemo.annotate import annotate
from avemo.cache import read_features
from avemo.dataset import predict_video
from avemo.extract import extract
from avemo.features import ClipStream


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return tiny.trained_pipeline(tmp_path_factory.mktemp("models") / "tiny.safetensors")


@pytest.fixture(scope="module")
def parity(av_clip, trained, tmp_path_factory):
    """annotate (float32, stride 1) with every engine batch recorded, and extract of the same
    video straight from its faces (no crops folder), with the same detector settings."""
    seen: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    original = ClipStream.flush

    def recording(self):
        batches = original(self)
        for ends, audio, visual in batches:
            for k, end in enumerate(ends):
                seen[int(end)] = (audio[k], visual[k])
        return batches

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ClipStream, "flush", recording)
        table = annotate(av_clip, model=trained, stride=1, bf16=False, device="cpu")
    cache = tmp_path_factory.mktemp("cache")
    result = extract([av_clip], None, cache, pipeline=trained, device="cpu", progress=False)
    assert result.exit_code == 0 and len(result.done) == 1
    return table, seen, read_features(cache / f"{av_clip.stem}.npz")


def test_cached_features_equal_annotates_features(parity):
    table, seen, features = parity
    assert len(seen) == len(table) == len(features.frame) == 120  # one clip per frame
    assert features.face.sum() > 100  # the clip's face is found in (almost) every window
    for end, (audio, visual) in seen.items():
        np.testing.assert_allclose(features.audio[end], audio, rtol=0, atol=1e-6)
        np.testing.assert_allclose(features.visual[end], visual, rtol=0, atol=1e-6)
    assert np.abs(features.audio).sum() > 0 and np.abs(features.visual).sum() > 0


def test_the_head_on_cached_features_gives_annotates_raw_values(parity, trained):
    table, _, features = parity
    pipeline = models.load(trained)
    with torch.inference_mode():
        values = predict_video(pipeline.head, features, pipeline.seq_len)
    values = np.clip(values, -1.0, 1.0)
    values[~features.face] = np.nan
    raw = table[["valence_raw", "arousal_raw"]].to_numpy()
    assert np.isfinite(raw).sum() > 200
    np.testing.assert_allclose(raw, values, rtol=0, atol=1e-6, equal_nan=True)
