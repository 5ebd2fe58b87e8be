"""Fusion heads: per-clip audio and visual features of a sequence -> valence, arousal (SPEC 5).

Every head is called ``head(audio, visual)`` with ``audio: B x L x Da`` and ``visual: B x L x Dv``
and returns ``B x L x 2`` (valence, arousal). Feature sizes, L and widths are constructor
arguments. Here: the joint cross-attention of the CVPRW paper (``jca``, SPEC 5.1) and the
baselines of its ablation table (SPEC 5.4): ``concat``, ``cross_attention`` and
``leader_follower``. The journal's released JCA is in ``avemo.jca_tbiom``, the JMT in
``avemo.jmt``.

The three baselines share the JCA's encoders (``Linear`` to 128 per modality) and regressor so
that only the fusion differs; where the source papers leave details open this module's choices
are documented on each class.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from avemo.models.backbones import FEATURE_DIM
from avemo.models.registry import register

PROJ_DIM = 128  # width of the projected audio and visual features (X_a, X_v)
ATTN_DIM = 32  # k, width of the JCA attention maps H_a, H_v
HIDDEN_DIM = 128  # hidden units of the regressor
DROPOUT = 0.6  # regressor dropout
MODAL_DIM = 32  # leader-follower: query/key/value width per modality
OUTPUTS = 2  # valence, arousal
SEQ_LEN = 8  # clips per sequence of the CVPRW JCA
# what the JCA's regressor reads: the paper's [X_att,a | X_att,v], or the reference code's
# [V | X_att,v] (raw visual features and attended visual; SPEC 5.1's compatibility mode)
REGRESSOR_INPUTS = ("attended", "reference")
# one regressor with 2 outputs (`regressor`), or one per dimension with 1 output each
# (`vregressor`, `aregressor`: the journal code's CAM)
REGRESSOR_LAYOUTS = ("joint", "separate")


def regressor(
    in_dim: int, hidden: int = HIDDEN_DIM, dropout: float = DROPOUT, outputs: int = OUTPUTS
) -> nn.Sequential:
    """Linear(in, 128) -> Dropout(0.6) -> Linear(128, outputs): the JCA's (keys ``.0``, ``.2``)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.Dropout(dropout), nn.Linear(hidden, outputs))


@register("jca", "head")
class JCA(nn.Module):
    """Joint cross-attention (Praveen et al., CVPRW 2022; SPEC 5.1), vectorised over the batch.

    With ``X_a = encoder1(A)``, ``X_v = encoder2(V)`` (``L x 128`` each) and ``J = [X_a | X_v]``
    (``L x 256``, d = 256): ``C_a = tanh(X_a^T (W_ja J) / sqrt(d))``, ``H_a = ReLU(W_ca C_a +
    W_a X_a^T)``, ``X_att,a = (W_ha H_a)^T + X_a``, and likewise for the visual side; the output
    regresses ``[X_att,a | X_att,v]``. Parameter names are the reference's (``affine_a`` is
    W_ja, ``affine_v`` W_jv, ...).

    Compatibility with the reference code (the defaults are the paper's):

    - ``regressor_input="reference"`` regresses ``[V | X_att,v]`` (the raw visual features and
      the attended visual ones, ``visual_dim + 128`` inputs: 640 for 512-d features) as the CVPRW
      and journal CAM code does, so that their trained regressors can be kept. The attended audio
      is then unused: ``affine_a``, ``W_a``, ``W_ca`` and ``W_ha`` do not affect the output (they
      are kept so the reference's state dict loads, and ``return_attended`` still gives it).
    - ``regressors="separate"`` has one regressor per dimension, ``vregressor`` and
      ``aregressor`` (each ``Linear -> Dropout -> Linear(hidden, 1)``), as the journal CAM
      (``encoder1.weight`` layout, L = 16); ``"joint"`` has one ``regressor`` with 2 outputs.
    """

    def __init__(
        self,
        audio_dim: int = FEATURE_DIM,
        visual_dim: int = FEATURE_DIM,
        seq_len: int = SEQ_LEN,
        proj_dim: int = PROJ_DIM,
        attn_dim: int = ATTN_DIM,
        hidden: int = HIDDEN_DIM,
        dropout: float = DROPOUT,
        regressor_input: str = "attended",
        regressors: str = "joint",
    ):
        super().__init__()
        if regressor_input not in REGRESSOR_INPUTS:
            raise ValueError(f"regressor_input must be one of {REGRESSOR_INPUTS}")
        if regressors not in REGRESSOR_LAYOUTS:
            raise ValueError(f"regressors must be one of {REGRESSOR_LAYOUTS}")
        joint = 2 * proj_dim
        self.scale = 1.0 / math.sqrt(joint)
        self.reference_input = regressor_input == "reference"
        self.encoder1 = nn.Linear(audio_dim, proj_dim)
        self.encoder2 = nn.Linear(visual_dim, proj_dim)
        self.affine_a = nn.Linear(seq_len, seq_len, bias=False)
        self.affine_v = nn.Linear(seq_len, seq_len, bias=False)
        self.W_a = nn.Linear(seq_len, attn_dim, bias=False)
        self.W_v = nn.Linear(seq_len, attn_dim, bias=False)
        self.W_ca = nn.Linear(joint, attn_dim, bias=False)
        self.W_cv = nn.Linear(joint, attn_dim, bias=False)
        self.W_ha = nn.Linear(attn_dim, seq_len, bias=False)
        self.W_hv = nn.Linear(attn_dim, seq_len, bias=False)
        in_dim = visual_dim + proj_dim if self.reference_input else joint
        if regressors == "joint":
            self.regressor = regressor(in_dim, hidden, dropout)
        else:
            self.vregressor = regressor(in_dim, hidden, dropout, outputs=1)
            self.aregressor = regressor(in_dim, hidden, dropout, outputs=1)

    def _attend(self, x, joint, affine, w_x, w_c, w_h) -> torch.Tensor:
        """One modality: ``x`` B x L x 128, ``joint`` B x L x 256 -> attended B x L x 128."""
        mixed = affine(joint.transpose(1, 2)).transpose(1, 2)  # W_j J: mixes the L time steps
        corr = torch.tanh(x.transpose(1, 2) @ mixed * self.scale)  # C: B x 128 x 256
        attn = torch.relu(w_c(corr) + w_x(x.transpose(1, 2)))  # H: B x 128 x k
        return w_h(attn).transpose(1, 2) + x

    def _regress(self, features: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "regressor"):
            return self.regressor(features)
        return torch.cat([self.vregressor(features), self.aregressor(features)], dim=-1)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor, return_attended: bool = False):
        """``B x L x 2``; with ``return_attended`` also ``(X_att,a, X_att,v)``, ``B x L x 128``."""
        x_a, x_v = self.encoder1(audio), self.encoder2(visual)
        joint = torch.cat([x_a, x_v], dim=-1)
        att_v = self._attend(x_v, joint, self.affine_v, self.W_v, self.W_cv, self.W_hv)
        att_a = None
        if return_attended or not self.reference_input:
            att_a = self._attend(x_a, joint, self.affine_a, self.W_a, self.W_ca, self.W_ha)
        first = visual if self.reference_input else att_a
        out = self._regress(torch.cat([first, att_v], dim=-1))
        return (out, (att_a, att_v)) if return_attended else out


@register("concat", "head")
class Concat(nn.Module):
    """Feature concatenation + FC (ablation baseline): ``regressor([encoder1(A) | encoder2(V)])``.

    Assumption: the same per-modality encoders and regressor as :class:`JCA`, without attention.
    """

    def __init__(
        self,
        audio_dim: int = FEATURE_DIM,
        visual_dim: int = FEATURE_DIM,
        proj_dim: int = PROJ_DIM,
        hidden: int = HIDDEN_DIM,
        dropout: float = DROPOUT,
    ):
        super().__init__()
        self.encoder1 = nn.Linear(audio_dim, proj_dim)
        self.encoder2 = nn.Linear(visual_dim, proj_dim)
        self.regressor = regressor(2 * proj_dim, hidden, dropout)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return self.regressor(torch.cat([self.encoder1(audio), self.encoder2(visual)], dim=-1))


@register("cross_attention", "head")
class CrossAttention(nn.Module):
    """Vanilla cross-attention (Praveen et al., FG 2021; ablation baseline).

    The cross-correlation of the two modalities over time, ``C = X_a W X_v^T / sqrt(d)``
    (``L x L``, W learnable ``d x d``, d = 128), gives each modality attention weights over the
    other's time steps: the attended audio at visual step j is ``sum_i softmax_i(C_ij) X_a[i]``,
    the attended visual at audio step i is ``sum_j softmax_j(C_ij) X_v[j]``. No joint
    representation. Assumptions: softmax normalisation (as in the authors' code), a residual
    connection to the unattended features as in :class:`JCA`, and the JCA's encoders and
    regressor.
    """

    def __init__(
        self,
        audio_dim: int = FEATURE_DIM,
        visual_dim: int = FEATURE_DIM,
        proj_dim: int = PROJ_DIM,
        hidden: int = HIDDEN_DIM,
        dropout: float = DROPOUT,
    ):
        super().__init__()
        self.scale = 1.0 / math.sqrt(proj_dim)
        self.encoder1 = nn.Linear(audio_dim, proj_dim)
        self.encoder2 = nn.Linear(visual_dim, proj_dim)
        self.corr_weights = nn.Parameter(nn.init.xavier_normal_(torch.empty(proj_dim, proj_dim)))
        self.regressor = regressor(2 * proj_dim, hidden, dropout)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        x_a, x_v = self.encoder1(audio), self.encoder2(visual)
        corr = x_a @ self.corr_weights @ x_v.transpose(1, 2) * self.scale  # B x L_a x L_v
        att_a = corr.softmax(dim=1).transpose(1, 2) @ x_a + x_a
        att_v = corr.softmax(dim=2) @ x_v + x_v
        return self.regressor(torch.cat([att_a, att_v], dim=-1))


@register("leader_follower", "head")
class LeaderFollower(nn.Module):
    """Leader-follower attentive fusion (Zhang et al., ICCVW 2021; ablation baseline).

    The visual stream leads. At every time step each modality's encoded feature gives a query,
    key and value (``modal_dim`` wide); attention across the two modalities, plus the values and
    a LayerNorm, gives the follower features, and ``[leader | follower_a | follower_v]`` is
    regressed. (Seed 000's table cites Schoneveld et al. for this row; the leader-follower
    fusion is Zhang et al.'s.) Assumptions: the JCA's Linear encoders instead of the paper's
    per-modality TCNs, and the JCA's regressor instead of a single Linear.
    """

    def __init__(
        self,
        audio_dim: int = FEATURE_DIM,
        visual_dim: int = FEATURE_DIM,
        proj_dim: int = PROJ_DIM,
        modal_dim: int = MODAL_DIM,
        hidden: int = HIDDEN_DIM,
        dropout: float = DROPOUT,
    ):
        super().__init__()
        self.scale = 1.0 / math.sqrt(modal_dim)
        self.encoder1 = nn.Linear(audio_dim, proj_dim)
        self.encoder2 = nn.Linear(visual_dim, proj_dim)
        # index 0: audio, 1: visual
        self.query = nn.ModuleList(nn.Linear(proj_dim, modal_dim) for _ in range(2))
        self.key = nn.ModuleList(nn.Linear(proj_dim, modal_dim) for _ in range(2))
        self.value = nn.ModuleList(nn.Linear(proj_dim, modal_dim) for _ in range(2))
        self.norm = nn.LayerNorm([2, modal_dim])
        self.regressor = regressor(proj_dim + 2 * modal_dim, hidden, dropout)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        streams = (self.encoder1(audio), self.encoder2(visual))
        q, k, v = (
            torch.stack([layer(x) for layer, x in zip(layers, streams, strict=True)], dim=-2)
            for layers in (self.query, self.key, self.value)
        )  # B x L x 2 x modal_dim
        weights = (q @ k.transpose(-1, -2) * self.scale).softmax(dim=-1)
        follower = self.norm(weights @ v + v).flatten(-2)
        return self.regressor(torch.cat([streams[1], follower], dim=-1))


def _dimension_heads_arguments(audio_dim: int, visual_dim: int, seq_len: int) -> dict:
    """``avemo train --head per_dimension``: one paper JCA per dimension."""
    spec = {"builder": "jca", "kwargs": {"audio_dim": audio_dim, "visual_dim": visual_dim,
                                         "seq_len": seq_len}}  # fmt: skip
    return {"valence": spec, "arousal": spec}


@register("per_dimension", "head", train_arguments=_dimension_heads_arguments)
class PerDimension(nn.Module):
    """One fusion head per dimension: valence from ``valence``'s output 0, arousal from
    ``arousal``'s output 1, each head with its own attention.

    This is how the CVPRW release is run: its code trains one JCA per dimension (two fusion
    files, each regressing one dimension), and ``avemo weights import valence.t7 arousal.t7
    --pipeline`` joins them here (:func:`join_dimensions`). ``valence`` and ``arousal`` are
    ``{"builder": name, "kwargs": {...}}`` specs of heads that read pooled visual features; the
    output of each head that is not used (its other dimension) is computed and dropped.
    """

    def __init__(self, valence: dict | None = None, arousal: dict | None = None):
        super().__init__()
        from avemo.models.registry import build, builder

        valence = valence or {"builder": "jca", "kwargs": {}}  # default: the paper's JCA
        arousal = arousal or {"builder": "jca", "kwargs": {}}

        for name, spec in (("valence", valence), ("arousal", arousal)):
            if not isinstance(spec, dict) or not isinstance(spec.get("builder"), str):
                raise ValueError(f"{name} must be a dict {{'builder': name, 'kwargs': {{...}}}}")
            entry = builder(spec["builder"])
            if entry.component != "head" or spec["builder"] == "per_dimension":
                raise ValueError(f"{name}: {spec['builder']!r} is not a single fusion head")
            if entry.visual_features != "pool":
                raise ValueError(
                    f"{name}: {spec['builder']!r} reads {entry.visual_features} "
                    "visual features; per_dimension joins heads of pooled ones"
                )
        self.valence = build(valence["builder"], **valence.get("kwargs", {}))
        self.arousal = build(arousal["builder"], **arousal.get("kwargs", {}))

    @property
    def seq_len(self) -> int | None:
        """The sub-heads' L (they must agree), or None when they do not say."""
        lengths = {h.avemo_config["kwargs"].get("seq_len") for h in (self.valence, self.arousal)}
        return lengths.pop() if len(lengths) == 1 else None

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.valence(audio, visual)[..., :1],
                          self.arousal(audio, visual)[..., 1:2]], dim=-1)  # fmt: skip


def join_dimensions(valence: nn.Module, arousal: nn.Module) -> PerDimension:
    """A :class:`PerDimension` head holding the weights of two built heads (``build``/``load``):
    ``valence``'s valence output and ``arousal``'s arousal output."""
    from avemo.models.registry import build

    specs = {}
    for name, head in (("valence", valence), ("arousal", arousal)):
        config = head.avemo_config
        specs[name] = {"builder": config["builder"], "kwargs": dict(config["kwargs"])}
    lengths = {spec["kwargs"].get("seq_len") for spec in specs.values()}
    if len(lengths) != 1:
        raise ValueError(f"the two heads take different sequence lengths ({sorted(lengths)})")
    joined = build("per_dimension", **specs)
    joined.valence.load_state_dict(valence.state_dict(), strict=True)
    joined.arousal.load_state_dict(arousal.state_dict(), strict=True)
    return joined
