"""How much of a fusion head's fused representation comes from the audio (``audio_share``).

The fused representation is what a head's regressors read: for the JCA the cross-attended
features ``[X_att,a | X_att,v]`` (``[V | X_att,v]`` in the reference compatibility mode), for the
JMT the output of its attention over the six modality tokens (or its FC layer), for the journal
JCA its joint LSTM output, for the ablation baselines their fused features. Per clip, with ``R``
the representation of the real features and ``R_-a`` / ``R_-v`` the same with the audio / visual
features of the whole sequence replaced by zeros,

    d_a = ||R - R_-a||,  d_v = ||R - R_-v||,  audio_share = d_a / (d_a + d_v)

(NaN when both are 0): 0 when the representation does not depend on the audio at all, 1 when it
does not depend on the face, 0.5 when removing either changes it as much. A head made of one head
per dimension (``per_dimension``: the CVPRW release's valence and arousal files) has the mean of
its two heads' shares. It is read off the head
itself, so a head whose audio weights are zero gives exactly 0 and one whose visual weights are
zero gives exactly 1, whatever attention it uses.
"""

from __future__ import annotations

import torch
from torch import nn

REGRESSORS = ("regressor", "vregressor")  # the module whose input is the fused representation


def _regressor(head: nn.Module) -> nn.Module:
    for name in REGRESSORS:
        module = getattr(head, name, None)
        if isinstance(module, nn.Module):
            return module
    raise ValueError(f"{type(head).__name__} has no regressor to read the fused features from")


def fuse_with_representation(
    head: nn.Module, audio: torch.Tensor, visual: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``head(audio, visual)`` and the ``B x L x D`` features its regressor read."""
    seen: list[torch.Tensor] = []
    hook = _regressor(head).register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    try:
        out = head(audio, visual)
    finally:
        hook.remove()
    return out, seen[0]


SUB_HEADS = ("valence", "arousal")  # a per-dimension head's heads (avemo.models.heads)


def audio_share(
    head: nn.Module, audio: torch.Tensor, visual: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's output ``B x L x 2`` and ``audio_share`` ``B x L`` (module docstring)."""
    parts = [getattr(head, name, None) for name in SUB_HEADS]
    if all(isinstance(part, nn.Module) for part in parts):
        shares = torch.stack([audio_share(part, audio, visual)[1] for part in parts])
        # nanmean, spelled out so that it exports to ONNX (which has no nanmean)
        known = ~shares.isnan()
        total = torch.where(known, shares, torch.zeros_like(shares)).sum(dim=0)
        count = known.sum(dim=0)
        mean = torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, torch.nan))
        return head(audio, visual), mean
    out, fused = fuse_with_representation(head, audio, visual)
    _, no_audio = fuse_with_representation(head, torch.zeros_like(audio), visual)
    _, no_visual = fuse_with_representation(head, audio, torch.zeros_like(visual))
    d_a = (fused.float() - no_audio.float()).norm(dim=-1)
    d_v = (fused.float() - no_visual.float()).norm(dim=-1)
    total = d_a + d_v
    share = torch.where(total > 0, d_a / total.clamp_min(1e-30), torch.nan)
    return out, share
