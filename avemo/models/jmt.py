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
``vregressor.0.*``, ...) without its unused ``final_encoder`` (``avemo.convert``, format
``jmt``, maps the reference's checkpoint). Attention weights are softmax,
as in the reference code, by default; ``attention="sigmoid"`` follows the paper. Unlike the
reference, whose FC mode returns time-major output, everything here is batch-major.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avemo.models.backbones import FEATURE_DIM
from avemo.models.registry import register

HEADS = 1  # attention heads
LAYERS = 1  # layers per encoder block
FFN_DIM = 512  # hidden units of each block's feed-forward network
FC_DIM = 1024  # width of out_layer1 in "fc" mode
HEAD_HIDDEN = 128
DROPOUT = 0.6  # regressor dropout
MODES = ("fc", "self_attention")
ATTENTIONS = ("softmax", "sigmoid")  # attention weights: the reference code's, or the paper's
STREAMS = 6  # cross-attention outputs
SEQ_LEN = 16  # clips per sequence of JMT, as the journal JCA's (SPEC 2)


class Attention(nn.MultiheadAttention):
    """Batch-first multi-head attention with softmax (torch's) or element-wise sigmoid weights.

    ``sigmoid`` scores every query-key pair independently, ``sigmoid(q.k / sqrt(d))``, as the
    JMT paper writes it; the parameters (``in_proj_*``, ``out_proj``) are the same either way.
    """

    def __init__(self, dim: int, heads: int, weights: str = "softmax"):
        super().__init__(dim, heads, batch_first=True)
        if weights not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {weights!r}")
        self.scoring = weights

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor):
        if self.scoring == "softmax":
            return super().forward(query, key, value, need_weights=False)
        q, k, v = (
            F.linear(x, w, b)
            for x, w, b in zip(
                (query, key, value),
                self.in_proj_weight.chunk(3),
                self.in_proj_bias.chunk(3),
                strict=True,
            )
        )
        b, heads = q.shape[0], self.num_heads
        q, k, v = (t.unflatten(-1, (heads, self.head_dim)).transpose(1, 2) for t in (q, k, v))
        scores = torch.sigmoid(q @ k.transpose(-1, -2) / self.head_dim**0.5)
        out = (scores @ v).transpose(1, 2).reshape(b, -1, self.embed_dim)
        return self.out_proj(out), None


class EncoderLayer(nn.Module):
    """Post-LN block: ``x + MHA(x)`` -> LayerNorm -> ``x + FFN(x)`` -> LayerNorm, no dropout."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, weights: str = "softmax"):
        super().__init__()
        self.attention = Attention(dim, heads, weights)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, dim)
        )
        self.layer_norm1 = nn.LayerNorm(dim)
        self.layer_norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm1(x + self.attention(x, x, x)[0])
        return self.layer_norm2(x + self.feed_forward(x))


class EncoderBlock(nn.Module):
    """``layers`` encoder layers in ``layers.0``, ``layers.1``, ... (batch-first)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, layers: int, weights: str):
        super().__init__()
        self.layers = nn.Sequential(
            *(EncoderLayer(dim, heads, ffn_dim, weights) for _ in range(layers))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _attend(attention: Attention, query, other) -> torch.Tensor:
    """Plain cross-attention: no residual, no norm."""
    return attention(query, other, other)[0]


class MultimodalTransformer(nn.Module):
    """The JMT fusion body: features ``B x L x dim`` (both) -> ``B x L x 1024`` or ``512``."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, layers: int, mode: str, weights: str):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        block = (dim, heads, ffn_dim, layers, weights)
        self.visual_encoder = EncoderBlock(*block)
        self.physiological_encoder = EncoderBlock(*block)  # audio
        self.joint_representation_encoder = EncoderBlock(*block)
        self.cross_attention_v = Attention(dim, heads, weights)
        self.cross_attention_p = Attention(dim, heads, weights)
        self.cross_attention_pv = Attention(dim, heads, weights)
        self.out_layer_pv = nn.Linear(2 * dim, dim)
        if mode == "fc":
            self.out_layer1 = nn.Linear(STREAMS * dim, FC_DIM)
        else:
            self.final_visual_encoder = EncoderBlock(*block)
            self.final_self_attention = Attention(dim, heads, weights)

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
        tokens = self.final_self_attention(tokens, tokens, tokens)[0]
        return tokens[:, -1].reshape(b, length, dim)


def _head(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> Dropout -> Linear(hidden, 1) (keys ``.0`` and ``.3``)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1)
    )


def train_arguments(audio_dim: int, visual_dim: int, seq_len: int) -> dict:
    """JMT's arguments for a feature cache: one width for both streams (any L)."""
    if audio_dim != visual_dim:
        raise ValueError(
            f"jmt needs audio and visual features of one width, the cache has {audio_dim} "
            f"and {visual_dim} (extract pooled 512-d visual features)"
        )
    return {"dim": audio_dim}


@register("jmt", "head", train_arguments=train_arguments, default_seq_len=SEQ_LEN)
class JMT(nn.Module):
    """JMT head: raw audio and visual features ``B x L x dim`` -> ``B x L x 2``.

    Defaults are the reference's (512 wide, 1 head, 1 layer; "self_attention" ~11.2M
    parameters, "fc" ~11.8M). ``attention="sigmoid"`` gives the paper's sigmoid attention
    weights instead of the reference code's softmax (same parameters).
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
        attention: str = "softmax",
    ):
        super().__init__()
        self.mm_transformer = MultimodalTransformer(dim, heads, ffn_dim, layers, mode, attention)
        out_dim = FC_DIM if mode == "fc" else dim
        self.vregressor = _head(out_dim, hidden, dropout)
        self.aregressor = _head(out_dim, hidden, dropout)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        fused = self.mm_transformer(F.normalize(audio, dim=-1), F.normalize(visual, dim=-1))
        return torch.cat([self.vregressor(fused), self.aregressor(fused)], dim=-1)
