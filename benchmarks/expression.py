"""Speed of the offline default model: crops/s for the crop and the network (fp32, bf16).

    python benchmarks/expression.py [--batch-size 64] [--seconds 3] [--device auto]

Crops come from a real photo (scikit-image's astronaut, upscaled to a 640x480 frame with a face
about 100 px wide, as in a typical video); the network runs on batches of them under
``torch.inference_mode``, in float32 and under bfloat16 autocast. Prints one line per stage.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from avemo import models
from avemo.devices import torch_device
from avemo.face import align
from avemo.models import expression
from avemo.values import expression_probabilities

ASTRONAUT_LANDMARKS = np.array([[203, 102], [247, 105], [223, 125], [203, 142], [241, 144]], float)


def frame_and_landmarks() -> tuple[np.ndarray, np.ndarray]:
    """A 640x480 RGB frame with a real face about 100 px wide, and its 5 landmarks."""
    from skimage import data

    image = Image.fromarray(data.astronaut()).resize((640, 640), Image.BILINEAR)
    frame = np.asarray(image)[80:560]
    return frame, ASTRONAUT_LANDMARKS * 1.25 - [0, 80]


def rate(step, items: int, seconds: float) -> float:
    """Items per second of ``step()`` (each call handles ``items``), after one warm-up call."""
    step()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        step()
        calls += 1
    return calls * items / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = torch_device(args.device)
    model = models.load(expression.DEFAULT_CHECKPOINT, device=device)
    frame, landmarks = frame_and_landmarks()
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch_size}")

    crop_rate = rate(lambda: align.expression_crop(frame, landmarks), 1, args.seconds)
    print(f"expression_crop (640x480 frame -> 64x64 gray): {crop_rate:8.0f} crops/s")
    crops = np.stack([align.expression_crop(frame, landmarks)] * args.batch_size)
    for bf16 in (False, True):
        speed = rate(
            lambda bf16=bf16: expression_probabilities(
                model, crops, device=device, batch_size=args.batch_size, bf16=bf16
            ),
            len(crops),
            args.seconds,
        )
        label = "bf16 autocast" if bf16 else "fp32"
        print(f"predict, {label:>13}: {speed:8.0f} crops/s")


if __name__ == "__main__":
    main()
