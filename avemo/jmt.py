"""Joint multimodal transformer (JMT, Waligora et al., ABAW 2024; SPEC 5.3), batch-major.

``forward(audio, visual)`` with raw ``B x L x 512`` features of both modalities L2-normalises
them, forms the joint representation ``out_layer_pv([V | A])``, encodes the three streams with
one post-LN transformer block each, and combines them with six cross-attentions (query = one
stream, key = value = another) in the order [v<-a, a<-v, joint<-v, v<-joint, joint<-a,
a<-joint]. Two output modes:

- ``"fc"`` (the paper): the six outputs concatenated (3072) -> ``out_layer1`` (1024) -> heads;
- ``"self_attention"`` (the reference code's default): per time step the six outputs are six
  tokens through one more encoder block and a bare attention; the last token (a<-joint) -> heads.

Parameter names are the reference's (``mm_transformer.visual_encoder.layers.0.attention.*``,
``vregressor.0.*``, ...) without its unused ``final_encoder``. Attention is softmax attention,
as in the reference code (the paper writes a sigmoid). Unlike the reference, whose FC mode
returns time-major output, everything here is batch-major.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avemo.backbones import FEATURE_DIM
from avemo.models import register

HEADS = 1  # attention heads
LAYERS = 1  # layers per encoder block
FFN_DIM = 512  # hidden units of each block's feed-forward network
FC_DIM = 1024  # width of out_layer1 in "fc" mode
HEAD_HIDDEN = 128
DROPOUT = 0.6  # regressor dropout
MODES = ("fc", "self_attention")
STREAMS = 6  # cross-attention outputs


class EncoderLayer(nn.Module):
    """Post-LN block: ``x + MHA(x)`` -> LayerNorm -> ``x + FFN(x)`` -> LayerNorm, no dropout."""

    def __init__(self, dim: int, heads: int, ffn_dim: int):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, dim)
        )
        self.layer_norm1 = nn.LayerNorm(dim)
        self.layer_norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm1(x + self.attention(x, x, x, need_weights=False)[0])
        return self.layer_norm2(x + self.feed_forward(x))


class EncoderBlock(nn.Module):
    """``layers`` encoder layers in ``layers.0``, ``layers.1``, ... (batch-first)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, layers: int):
        super().__init__()
        self.layers = nn.Sequential(*(EncoderLayer(dim, heads, ffn_dim) for _ in range(layers)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _attend(attention: nn.MultiheadAttention, query, other) -> torch.Tensor:
    """Plain cross-attention: no residual, no norm."""
    return attention(query, other, other, need_weights=False)[0]


class MultimodalTransformer(nn.Module):
    """The JMT fusion body: features ``B x L x dim`` (both) -> ``B x L x 1024`` or ``512``."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, layers: int, mode: str):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.visual_encoder = EncoderBlock(dim, heads, ffn_dim, layers)
        self.physiological_encoder = EncoderBlock(dim, heads, ffn_dim, layers)  # audio
        self.joint_representation_encoder = EncoderBlock(dim, heads, ffn_dim, layers)
        self.cross_attention_v = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attention_p = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attention_pv = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.out_layer_pv = nn.Linear(2 * dim, dim)
        if mode == "fc":
            self.out_layer1 = nn.Linear(STREAMS * dim, FC_DIM)
        else:
            self.final_visual_encoder = EncoderBlock(dim, heads, ffn_dim, layers)
            self.final_self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        joint = self.joint_representation_encoder(self.out_layer_pv(torch.cat([visual, audio], -1)))
        v = self.visual_encoder(visual)
        a = self.physiological_encoder(audio)
        streams = (
            _attend(self.cross_attention_v, v, a),
            _attend(self.cross_attention_p, a, v),
            _attend(self.cross_attention_pv, joint, v),
            _attend(self.cross_attention_v, v, joint),
            _attend(self.cross_attention_pv, joint, a),
            _attend(self.cross_attention_p, a, joint),
        )
        if self.mode == "fc":
            return self.out_layer1(torch.cat(streams, dim=-1))
        b, length, dim = v.shape
        tokens = torch.stack(streams, dim=2).reshape(b * length, STREAMS, dim)
        tokens = self.final_visual_encoder(tokens)
        tokens = self.final_self_attention(tokens, tokens, tokens, need_weights=False)[0]
        return tokens[:, -1].reshape(b, length, dim)


def _head(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> Dropout -> Linear(hidden, 1) (keys ``.0`` and ``.3``)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1)
    )


@register("jmt", "head")
class JMT(nn.Module):
    """JMT head: raw audio and visual features ``B x L x dim`` -> ``B x L x 2``.

    Defaults are the reference's (512 wide, 1 head, 1 layer; "self_attention" ~11.2M
    parameters, "fc" ~11.8M).
    """

    def __init__(
        self,
        dim: int = FEATURE_DIM,
        mode: str = "self_attention",
        heads: int = HEADS,
        layers: int = LAYERS,
        ffn_dim: int = FFN_DIM,
        hidden: int = HEAD_HIDDEN,
        dropout: float = DROPOUT,
    ):
        super().__init__()
        self.mm_transformer = MultimodalTransformer(dim, heads, ffn_dim, layers, mode)
        out_dim = FC_DIM if mode == "fc" else dim
        self.vregressor = _head(out_dim, hidden, dropout)
        self.aregressor = _head(out_dim, hidden, dropout)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        fused = self.mm_transformer(F.normalize(audio, dim=-1), F.normalize(visual, dim=-1))
        return torch.cat([self.vregressor(fused), self.aregressor(fused)], dim=-1)


def reference_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A JMT ``fusion_w.pt`` state dict without ``module.`` and the unused ``final_encoder``."""
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if not key.startswith("mm_transformer.final_encoder."):
            out[key] = value
    return out
