"""The networks as a runtime runs them: array in, arrays out, preprocessing inside, and ONNX export.

Each wrapper turns a loaded avemo module into one graph that takes what the pipeline has (uint8
crops, spectrograms, feature sequences) and returns what it needs, so that torch, onnxruntime and
OpenVINO run the very same computation (:mod:`avemo.backends` converts and caches them):

- :class:`ExpressionNetwork`: ``N x 64 x 64`` uint8 gray crops -> ``N x 7`` class probabilities.
- :class:`VisualNetwork`: ``B x T x S x S x 3`` uint8 RGB clips -> ``B x Dv`` features (the
  backbone's own normalisation inside).
- :class:`AudioNetwork`: ``B x 1 x 64 x 107`` log-mel spectrograms -> ``B x Da`` features.
- :class:`HeadNetwork`: ``B x L x Da`` and ``B x L x Dv`` features -> ``B x L x 2`` values and,
  with ``share``, ``B x L`` audio shares (:mod:`avemo.models.share`).

:func:`export_onnx` writes any of them as ONNX with a dynamic batch axis.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from torch import nn

from avemo.models.backbones import normalise_clips
from avemo.models.mini_xception import preprocess
from avemo.models.share import audio_share

ONNX_OPSET = 17  # LayerNorm and the attention ops as single nodes; read by onnxruntime >= 1.13
# and OpenVINO >= 2022.3


def channels_last(module: nn.Module) -> nn.Module:
    """Convolution weights in channels-last layout (oneDNN and cuDNN run those several times
    faster on CPU; same results)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv3d):
            layer.to(memory_format=torch.channels_last_3d)
        elif isinstance(layer, nn.Conv2d):
            layer.to(memory_format=torch.channels_last)
    return module


def _layout(x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """``x`` in ``memory_format`` for torch's own kernels; unchanged in an ONNX export (the
    runtimes choose their own layouts, and ONNX has no memory formats)."""
    return x if torch.onnx.is_in_onnx_export() else x.contiguous(memory_format=memory_format)


class ExpressionNetwork(nn.Module):
    """The expression model on uint8 crops: ``N x 64 x 64`` -> ``N x classes`` probabilities."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = channels_last(model)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = _layout(preprocess(crops), torch.channels_last)
        return self.model(x).float()


class VisualNetwork(nn.Module):
    """A visual backbone on uint8 clips ``B x T x S x S x 3`` (RGB, as aligned) -> ``B x Dv``."""

    def __init__(self, backbone: nn.Module, preprocessing: dict):
        super().__init__()
        self.backbone = channels_last(backbone)
        self.preprocessing = dict(preprocessing)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = normalise_clips(clips.permute(0, 4, 1, 2, 3), self.preprocessing)
        return self.backbone(_layout(x, torch.channels_last_3d)).float()


class AudioNetwork(nn.Module):
    """An audio backbone on log-mel spectrograms ``B x 1 x 64 x 107`` -> ``B x Da``."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = channels_last(backbone)

    def forward(self, spectrograms: torch.Tensor) -> torch.Tensor:
        return self.backbone(spectrograms.float()).float()


class HeadNetwork(nn.Module):
    """A fusion head on feature sequences -> ``B x L x 2`` values (and ``B x L`` audio shares)."""

    def __init__(self, head: nn.Module, share: bool = True):
        super().__init__()
        self.head, self.share = head, bool(share)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor):
        if not self.share:
            return self.head(audio, visual).float()
        out, share = audio_share(self.head, audio, visual)
        return out.float(), share.float()


def export_onnx(
    network: nn.Module,
    example: tuple[np.ndarray, ...],
    path: str | os.PathLike,
    *,
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
) -> None:
    """Write ``network`` (in eval mode, on the CPU) as ONNX to ``path``, traced on ``example``
    (arrays, one per input), with the first axis of every input and output dynamic."""
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in example)
    axes = {name: {0: "batch"} for name in (*inputs, *outputs)}
    network = network.cpu().eval()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # the exporter warns about traced Python values (shapes, fixed at the example's), and
        # that the TorchScript exporter will be replaced; both are expected here
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            tensors,
            os.fspath(path),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
