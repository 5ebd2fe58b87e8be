"""The whole model ``avemo annotate`` runs: visual backbone + audio backbone + fusion head.

:class:`Pipeline` (builder ``pipeline``) bundles the three parts with the sequence length L; its
checkpoint records each part's builder, arguments and input preprocessing. :func:`assemble` is
the one way a pipeline is put together from trained parts (``avemo weights import --pipeline``
and ``avemo train --pipeline`` / ``avemo bundle`` both call it).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from avemo.errors import AvemoError
from avemo.models.registry import ROLES, build, builder, builders, register


class Pipeline(nn.Module):
    """Visual backbone + audio backbone + fusion head: clips and spectrograms -> valence, arousal.

    ``visual`` maps normalised clips ``B x 3 x T x H x W`` to ``B x Dv``, ``audio`` maps
    spectrograms ``B x 1 x 64 x 107`` to ``B x Da``, ``head`` maps ``(B x L x Da, B x L x Dv)`` to
    ``B x L x 2``. ``visual_preprocessing`` and ``audio_preprocessing`` describe the inputs the
    backbones expect (from their builders).
    """

    def __init__(self, visual: nn.Module, audio: nn.Module, head: nn.Module, seq_len: int):
        super().__init__()
        self.visual = visual
        self.audio = audio
        self.head = head
        self.seq_len = int(seq_len)
        self.visual_preprocessing = dict(
            getattr(visual, "avemo_config", {}).get("preprocessing", {})
        )
        self.audio_preprocessing = dict(getattr(audio, "avemo_config", {}).get("preprocessing", {}))
        self.avemo_preprocessing = {
            "visual": self.visual_preprocessing,
            "audio": self.audio_preprocessing,
            "seq_len": self.seq_len,
        }

    def encode_visual(self, clips: torch.Tensor) -> torch.Tensor:
        """Normalised clips ``B x 3 x T x H x W`` -> features ``B x Dv``."""
        return self.visual(clips)

    def encode_audio(self, specs: torch.Tensor) -> torch.Tensor:
        """Spectrograms ``B x 1 x 64 x 107`` -> features ``B x Da``."""
        return self.audio(specs)

    def fuse(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """Features ``B x L x Da`` and ``B x L x Dv`` -> ``B x L x 2`` (valence, arousal)."""
        return self.head(audio, visual)

    def forward(self, clips: torch.Tensor, specs: torch.Tensor) -> torch.Tensor:
        """Clips ``B x L x 3 x T x H x W``, spectrograms ``B x L x 1 x 64 x 107`` -> ``B x L x 2``.

        The L clips of each sequence go through the backbones as one batch of ``B * L``.
        """
        b, length = clips.shape[:2]
        visual = self.encode_visual(clips.flatten(0, 1)).view(b, length, -1)
        audio = self.encode_audio(specs.flatten(0, 1)).view(b, length, -1)
        return self.fuse(audio, visual)


@register("pipeline", "pipeline")
def pipeline(visual: dict, audio: dict, head: dict, seq_len: int) -> Pipeline:
    """A :class:`Pipeline` from three ``{"builder": name, "kwargs": {...}}`` specs."""
    parts = {}
    for role, spec in (("visual", visual), ("audio", audio), ("head", head)):
        component = ROLES[role]
        if not isinstance(spec, dict) or not isinstance(spec.get("builder"), str):
            raise ValueError(f"{role} must be a dict {{'builder': name, 'kwargs': {{...}}}}")
        name = spec["builder"]
        kind = builder(name).component if name in builders() else None
        if kind != component:
            raise ValueError(f"{role} must be a {component} builder, got {name!r} ({kind})")
        parts[role] = build(name, **spec.get("kwargs", {}))
    return Pipeline(parts["visual"], parts["audio"], parts["head"], seq_len)


def assemble(
    parts: Mapping[str, nn.Module], *, seq_len: int | None = None
) -> tuple[Pipeline, list[str]]:
    """One :class:`Pipeline` holding the weights of ``parts`` (role -> module made by
    :func:`avemo.models.build` or loaded), and notes on what was adapted.

    The visual backbone's feature mode is set to what the head reads (the journal JCA reads
    R(2+1)D's flat layer4); ``seq_len`` defaults to the head's own (or its builder's default).
    """
    specs = {}
    for role in ROLES:
        config = dict(parts[role].avemo_config)
        specs[role] = {"builder": config["builder"], "kwargs": dict(config["kwargs"])}
    head = specs["head"]
    entry = builder(head["builder"])
    notes = []
    wanted = entry.visual_features
    if specs["visual"]["kwargs"].get("features", wanted) != wanted:
        specs["visual"]["kwargs"]["features"] = wanted
        notes.append(f"visual features set to {wanted!r} for the {head['builder']} head")
    seq_len = seq_len or head["kwargs"].get("seq_len") or entry.default_seq_len
    if seq_len is None:
        raise AvemoError(f"give the sequence length (--seq-len) for a {head['builder']} head")
    pipeline = build("pipeline", **specs, seq_len=int(seq_len))
    for role in ROLES:
        getattr(pipeline, role).load_state_dict(parts[role].state_dict(), strict=True)
    return pipeline, notes
