"""The journal JCA as its code was released (T-BIOM, class ``orig_cam.CAM``; SPEC 5.2).

The only fusion model with public weights (``jointcam_model.pt``). It takes raw features: the
R(2+1)D layer4 output flattened (``B x L x 25088``, builder ``r2plus1d_18`` with
``features="flat"``) and the audio ResNet18's (``B x L x 512``), L2-normalises both, and runs

1. audio-guided *position attention* over the 49 rows of 512 of each 25088-vector (rows of the
   flattened tensor, not spatial cells) -> one 512-vector per clip;
2. one layer of *dense co-attention* between video (index 1) and audio (index 2);
3. ``Joint``: a 2-layer BiLSTM with a learned initial state over [video | audio], its input and
   output concatenated, a Linear to 512 and L2 normalisation;
4. one regressor per output (``vregressor``, ``aregressor``).

Parameter names are the reference's (``video_attn.attn.*``, ``coattn.dcn_layers.0.*``,
``Joint.*``); ``avemo.convert`` (format ``jca-journal``) strips the DataParallel ``module.``
prefix and loads its checkpoint strictly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from avemo.models.backbones import FEATURE_DIM
from avemo.models.registry import register

SEQ_LEN = 16  # clips per sequence of the journal JCA
POSITIONS = 49  # 512-rows of a 25088 R(2+1)D layer4 vector (also the attention's hidden width)
JOINT_DIM = 512  # output width of Joint (BiLSTM of 256 per direction)
LSTM_LAYERS = 2
HEAD_HIDDEN = 128
DROPOUT = 0.6  # co-attention scores and updates, and the regressors


class PositionAttention(nn.Module):
    """Audio-guided attention over the ``positions`` rows of each clip's visual vector."""

    def __init__(self, dim: int = FEATURE_DIM, positions: int = POSITIONS):
        super().__init__()
        self.dim = dim
        self.affine_audio = nn.Linear(dim, dim)
        self.affine_video = nn.Linear(dim, dim)
        self.affine_v = nn.Linear(dim, positions, bias=False)
        self.affine_g = nn.Linear(dim, positions, bias=False)
        self.affine_h = nn.Linear(positions, 1, bias=False)
        self.affine_feat = nn.Linear(dim, dim)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """``video`` B x L x (P*dim), ``audio`` B x L x dim -> B x L x dim."""
        b, length = video.shape[:2]
        rows = video.reshape(b * length, -1, self.dim)  # BL x P x dim
        hidden = self.affine_v(F.relu(self.affine_video(rows)))  # BL x P x P
        guide = self.affine_g(F.relu(self.affine_audio(audio.reshape(b * length, -1))))  # BL x P
        scores = self.affine_h(torch.tanh(hidden + guide.unsqueeze(2))).squeeze(2)  # BL x P
        pooled = (scores.softmax(dim=-1).unsqueeze(1) @ rows).squeeze(1)  # BL x dim
        return self.affine_feat(pooled.view(b, length, self.dim))


class DenseCoAttention(nn.Module):
    """Attention weights of two streams against their joint query (index 1 video, 2 audio)."""

    def __init__(self, dim1: int, dim2: int, seq_len: int, dropout: float):
        super().__init__()
        joint = dim1 + dim2
        self.scale = 1.0 / math.sqrt(joint)
        self.dropouts = nn.ModuleList(nn.Dropout(dropout) for _ in range(2))
        self.query_linear = nn.Linear(joint, joint)
        self.key1_linear = nn.Linear(seq_len, seq_len)
        self.key2_linear = nn.Linear(seq_len, seq_len)
        self.value1_linear = nn.Linear(dim1, dim1)
        self.value2_linear = nn.Linear(dim2, dim2)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        query = self.query_linear(torch.cat([x1, x2], dim=-1))  # B x L x joint
        out = []
        for x, key, value, dropout in (
            (x1, self.key1_linear, self.value1_linear, self.dropouts[0]),
            (x2, self.key2_linear, self.value2_linear, self.dropouts[1]),
        ):
            scores = dropout(torch.tanh(key(x.transpose(1, 2)) @ query * self.scale))  # B x d x J
            out.append(F.relu(torch.tanh(value(x) @ scores)))  # B x L x joint
        return out[0], out[1]


class CoAttentionLayer(nn.Module):
    """``x_i + linears[i](w_i)`` for both streams; both updates use the un-updated inputs."""

    def __init__(self, dim1: int, dim2: int, seq_len: int, dropout: float):
        super().__init__()
        self.dense_coattn = DenseCoAttention(dim1, dim2, seq_len, dropout)
        self.linears = nn.ModuleList(
            nn.Sequential(nn.Linear(dim1 + dim2, d), nn.ReLU(), nn.Dropout(dropout))
            for d in (dim1, dim2)
        )

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w1, w2 = self.dense_coattn(x1, x2)
        return x1 + self.linears[0](w1), x2 + self.linears[1](w2)


class JointLSTM(nn.Module):
    """BiLSTM with a learned initial state; ``normalize(linear([input | output]))``."""

    def __init__(self, in_dim: int, dim: int = JOINT_DIM, layers: int = LSTM_LAYERS):
        super().__init__()
        self.layers, self.rnn_dim = layers, dim // 2
        self.rnn = nn.LSTM(
            in_dim, self.rnn_dim, num_layers=layers, bidirectional=True, batch_first=True
        )
        # rows 0 .. 2*layers-1: h0, then c0, in PyTorch's (layer, direction) order
        self.init_hidden = nn.Parameter(nn.init.xavier_uniform_(torch.empty(4 * layers, dim // 2)))
        self.linear = nn.Linear(dim + in_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = self.init_hidden.unsqueeze(1).expand(-1, x.shape[0], -1).contiguous()
        h0, c0 = states[: 2 * self.layers], states[2 * self.layers :]
        out, _ = self.rnn(x, (h0, c0))
        return F.normalize(self.linear(torch.cat([x, out], dim=-1)), dim=-1)


def _head(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> Dropout -> Linear(hidden, 1) (keys ``.0`` and ``.3``)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1)
    )


def train_arguments(audio_dim: int, visual_dim: int, seq_len: int) -> dict:
    """The arguments for a feature cache: the visual vector is rows of the audio width."""
    if visual_dim % audio_dim:
        raise ValueError(
            f"jca_tbiom needs visual features that are rows of the audio width ({audio_dim}),"
            f" the cache has {visual_dim} (extract R(2+1)D features in flat mode)"
        )
    return {"audio_dim": audio_dim, "positions": visual_dim // audio_dim, "seq_len": seq_len}


# the released journal JCA reads R(2+1)D's layer4 flattened (SPEC 5.2)
@register("jca_tbiom", "head", train_arguments=train_arguments, visual_features="flat")
class JCATBIOM(nn.Module):
    """The released journal JCA: audio ``B x L x 512``, visual ``B x L x 25088`` -> ``B x L x 2``.

    Widths are constructor arguments; the defaults are the released model's (~8.59M parameters).
    """

    def __init__(
        self,
        audio_dim: int = FEATURE_DIM,
        positions: int = POSITIONS,
        seq_len: int = SEQ_LEN,
        joint_dim: int = JOINT_DIM,
        lstm_layers: int = LSTM_LAYERS,
        hidden: int = HEAD_HIDDEN,
        dropout: float = DROPOUT,
    ):
        super().__init__()
        dim = audio_dim  # the visual rows have the audio features' width
        self.video_attn = nn.ModuleDict({"attn": PositionAttention(dim, positions)})
        self.coattn = nn.ModuleDict(
            {"dcn_layers": nn.ModuleList([CoAttentionLayer(dim, dim, seq_len, dropout)])}
        )
        self.Joint = JointLSTM(2 * dim, joint_dim, lstm_layers)
        self.vregressor = _head(joint_dim, hidden, dropout)
        self.aregressor = _head(joint_dim, hidden, dropout)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        audio, visual = F.normalize(audio, dim=-1), F.normalize(visual, dim=-1)
        video = self.video_attn["attn"](visual, audio)
        for layer in self.coattn["dcn_layers"]:
            video, audio = layer(video, audio)
        joint = self.Joint(torch.cat([video, audio], dim=-1))
        return torch.cat([self.vregressor(joint), self.aregressor(joint)], dim=-1)
