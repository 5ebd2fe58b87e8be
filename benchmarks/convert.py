"""Seconds to import each published layout at full size, and to load the result.

    python benchmarks/convert.py [--formats tsav jmt ...] [--keep DIR]

For every format a reference file of the real size and key names is written first (from avemo's
own modules with random weights, renamed as SPEC 10 describes), then ``avemo.convert`` imports it
(read + sha256 + rename + strict fill + save) and ``avemo.models.load`` rebuilds the result.
Timings on a shared machine are noisy; file writing is not timed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from avemo import convert, models


def _weight_norm(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    conv = nn.Conv1d(weight.shape[1], weight.shape[0], weight.shape[2])
    conv.weight.data.copy_(weight)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nn.utils.weight_norm(conv)
    return {"weight_g": conv.weight_g.detach(), "weight_v": conv.weight_v.detach()}


def torchvision_file(folder: Path) -> Path:
    state = models.build("r2plus1d_18").state_dict()
    state.update({"fc.weight": torch.randn(400, 512), "fc.bias": torch.randn(400)})
    torch.save(state, folder / "r2plus1d_18-91a641e6.pth")
    return folder / "r2plus1d_18-91a641e6.pth"


def tsav_file(folder: Path) -> Path:
    video = models.build("r2plus1d_18").state_dict()
    video["stem.0.weight"] = torch.randn(45, 4, 1, 7, 7)
    state = {f"video_model.r2plus1d.{k}": v for k, v in video.items()}
    audio = models.build("audio_resnet18").state_dict()
    state.update({f"audio_model.resnet.{k}": v for k, v in audio.items()})
    state.update({"fc.1.weight": torch.randn(17, 1024), "fc.1.bias": torch.randn(17)})
    torch.save({"state_dict": state}, folder / "TSAV_Sub4_544k.pth.tar")
    return folder / "TSAV_Sub4_544k.pth.tar"


def i3d_file(folder: Path) -> Path:
    state = {k.removeprefix("i3d."): v for k, v in models.build("i3d").state_dict().items()}
    state.update({"logits.conv3d.weight": torch.randn(400, 1024, 1, 1, 1)})
    state["logits.conv3d.bias"] = torch.randn(400)
    torch.save(state, folder / "rgb_imagenet.pt")
    return folder / "rgb_imagenet.pt"


def cvpr_file(folder: Path) -> Path:
    module = models.build("i3d_tcn")
    state = {f"module.i3d_WSDDA.{k}": v for k, v in module.i3d.state_dict().items()}
    for level, block in enumerate(module.temporal.network):
        prefix = f"module.temporal.network.{level}."
        for conv, alias in (("conv1", "net.0"), ("conv2", "net.4")):
            layer = getattr(block, conv)
            tensors = {**_weight_norm(layer.weight.detach()), "bias": layer.bias.detach()}
            for name, value in tensors.items():
                state[f"{prefix}{conv}.{name}"] = state[f"{prefix}{alias}.{name}"] = value
        if block.downsample is not None:
            for name, value in block.downsample.state_dict().items():
                state[f"{prefix}downsample.{name}"] = value
    torch.save({"net": state}, folder / "Val_model_valence_cnn_lstm_mil_64_new.t7")
    return folder / "Val_model_valence_cnn_lstm_mil_64_new.t7"


def journal_file(folder: Path) -> Path:
    state = {f"module.{k}": v for k, v in models.build("jca_tbiom").state_dict().items()}
    torch.save(state, folder / "jointcam_model.pt")
    return folder / "jointcam_model.pt"


def jmt_file(folder: Path) -> Path:
    state = {f"module.{k}": v for k, v in models.build("jmt").state_dict().items()}
    block = "module.mm_transformer.final_encoder.layers.0."
    state[block + "attention.in_proj_weight"] = torch.randn(3 * 3072, 3072)
    state[block + "attention.out_proj.weight"] = torch.randn(3072, 3072)
    torch.save(state, folder / "fusion_w.pt")
    return folder / "fusion_w.pt"


FILES = {
    "torchvision": torchvision_file,
    "tsav": tsav_file,
    "pytorch-i3d": i3d_file,
    "jca-cvpr": cvpr_file,
    "jca-journal": journal_file,
    "jmt": jmt_file,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", nargs="+", default=list(FILES), choices=list(FILES))
    parser.add_argument("--keep", type=Path, help="Write the files here instead of a temp dir.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        print(f"{'format':12} {'source MB':>9} {'import s':>9} {'load s':>7}  outputs")
        for fmt in args.formats:
            source = FILES[fmt](folder)
            start = time.perf_counter()
            outputs = convert.import_weights(source, fmt, folder / f"{fmt}.safetensors")
            imported = time.perf_counter() - start
            start = time.perf_counter()
            for path in outputs:
                models.load(path)
            loaded = time.perf_counter() - start
            size = source.stat().st_size / 1e6
            names = ", ".join(p.name for p in outputs)
            print(f"{fmt:12} {size:9.1f} {imported:9.2f} {loaded:7.2f}  {names}")


if __name__ == "__main__":
    main()
