"""Fusion heads: JCA against its per-sample equations, the baselines, reference names."""

from __future__ import annotations

import math

import pytest
import torch
from modelcheck import (
    assert_deterministic,
    assert_gradients,
    assert_round_trip,
    load_reference,
    parameter_count,
)

from avemo import models
from avemo.models import heads

B, L, DA, DV = 3, 4, 6, 10
SMALL = {"audio_dim": DA, "visual_dim": DV, "proj_dim": 8, "hidden": 5}
SMALL_KWARGS = {
    "jca": {**SMALL, "seq_len": L, "attn_dim": 3},
    "concat": SMALL,
    "cross_attention": SMALL,
    "leader_follower": {**SMALL, "modal_dim": 4},
}


def inputs(batch: int = B, length: int = L):
    generator = torch.Generator().manual_seed(0)
    audio = torch.randn(batch, length, DA, generator=generator)
    visual = torch.randn(batch, length, DV, generator=generator)
    return audio, visual


@pytest.mark.parametrize("name", list(SMALL_KWARGS))
def test_shapes_gradients_determinism_round_trip(name, tmp_path):
    head = models.build(name, **SMALL_KWARGS[name])
    assert head.avemo_config["component"] == "head"
    audio, visual = inputs()
    out = assert_deterministic(head, audio, visual)
    assert out.shape == (B, L, 2)
    assert_gradients(head, audio, visual)
    assert_round_trip(head, (audio, visual), tmp_path)


def linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def test_default_parameter_counts():
    d, p, k, h, seq = 512, 128, 32, 128, 8
    regressor = linear(2 * p, h) + linear(h, 2)
    encoders = 2 * linear(d, p)
    attention = 2 * (seq * seq + linear(seq, k, False) + linear(2 * p, k, False) + seq * k)
    assert parameter_count(models.build("jca")) == encoders + attention + regressor
    assert parameter_count(models.build("concat")) == encoders + regressor
    assert parameter_count(models.build("cross_attention")) == encoders + p * p + regressor
    m = 32
    leader = encoders + 6 * linear(p, m) + 2 * 2 * m + linear(p + 2 * m, h) + linear(h, 2)
    assert parameter_count(models.build("leader_follower")) == leader


def regress(head: heads.JCA, features: torch.Tensor) -> torch.Tensor:
    """The regressor(s): ``regressor`` (2 outputs), or ``vregressor`` and ``aregressor``."""
    if hasattr(head, "regressor"):
        return head.regressor(features)
    return torch.cat([head.vregressor(features), head.aregressor(features)], dim=-1)


def jca_per_sample(head: heads.JCA, audio: torch.Tensor, visual: torch.Tensor):
    """SPEC 5.1's equations, one sample at a time, with explicit matrices.

    The regressor reads ``[X_att,a | X_att,v]`` (paper) or ``[V | X_att,v]`` (reference code).
    """
    outs, atts = [], []
    for a, v in zip(audio, visual, strict=True):
        x_a, x_v = head.encoder1(a), head.encoder2(v)  # L x 128
        joint = torch.cat([x_a, x_v], dim=1)  # L x 256
        d = joint.shape[1]
        attended = []
        for x, w_j, w_x, w_c, w_h in (
            (x_a, head.affine_a, head.W_a, head.W_ca, head.W_ha),
            (x_v, head.affine_v, head.W_v, head.W_cv, head.W_hv),
        ):
            c = torch.tanh(x.T @ (w_j.weight @ joint) / math.sqrt(d))  # 128 x 256
            h = torch.relu(c @ w_c.weight.T + x.T @ w_x.weight.T)  # 128 x k
            attended.append((h @ w_h.weight.T).T + x)  # L x 128
        atts.append(attended)
        first = v if head.reference_input else attended[0]
        outs.append(regress(head, torch.cat([first, attended[1]], dim=1)))
    return torch.stack(outs), [torch.stack(pair) for pair in zip(*atts, strict=True)]


COMPAT = [
    {"regressor_input": "attended", "regressors": "joint"},  # the paper (default)
    {"regressor_input": "reference", "regressors": "joint"},  # CVPRW code
    {"regressor_input": "reference", "regressors": "separate"},  # journal CAM code
    {"regressor_input": "attended", "regressors": "separate"},
]


@pytest.mark.parametrize("compat", COMPAT)
def test_jca_matches_per_sample_equations(compat):
    head = models.build("jca", **SMALL_KWARGS["jca"], **compat).eval()
    audio, visual = inputs()
    with torch.inference_mode():
        out, (att_a, att_v) = head(audio, visual, return_attended=True)
        expected, (exp_a, exp_v) = jca_per_sample(head, audio, visual)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(att_a, exp_a, atol=1e-6) and torch.allclose(att_v, exp_v, atol=1e-6)
    assert att_a.shape == att_v.shape == (B, L, 8)
    assert torch.equal(head(audio, visual), out)


def test_jca_attended_default_width():
    head = models.build("jca", seq_len=16).eval()
    with torch.inference_mode():
        out, (att_a, att_v) = head(torch.randn(2, 16, 512), torch.randn(2, 16, 512), True)
    assert out.shape == (2, 16, 2) and att_a.shape == att_v.shape == (2, 16, 128)


# the audio attention branch: with regressor_input="reference" nothing reads X_att,a
AUDIO_ATTENTION = {"affine_a.weight", "W_a.weight", "W_ca.weight", "W_ha.weight"}


@pytest.mark.parametrize("compat", COMPAT[1:])
def test_jca_compatibility_modes(compat, tmp_path):
    """Shapes, gradients, determinism and save -> load of the reference-compatible JCA."""
    head = models.build("jca", **SMALL_KWARGS["jca"], **compat)
    audio, visual = inputs()
    assert assert_deterministic(head, audio, visual).shape == (B, L, 2)
    loaded = assert_round_trip(head, (audio, visual), tmp_path)
    assert loaded.avemo_header["kwargs"] == {**SMALL_KWARGS["jca"], **compat}
    regressors = ["regressor"] if compat["regressors"] == "joint" else ["vregressor", "aregressor"]
    in_dim = DV + 8 if compat["regressor_input"] == "reference" else 2 * 8
    for name in regressors:
        assert getattr(head, name)[0].in_features == in_dim
        assert getattr(head, name)[2].out_features == 2 // len(regressors)

    torch.manual_seed(0)
    head.train().zero_grad()
    out = head(audio, visual)
    (out * torch.randn_like(out)).sum().backward()
    for name, parameter in head.named_parameters():
        unused = compat["regressor_input"] == "reference" and name in AUDIO_ATTENTION
        if unused:
            assert parameter.grad is None, f"{name} should not affect the output"
        else:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_jca_reference_input_ignores_attended_audio():
    """[V | X_att,v]: the output changes with V itself, and not with the audio attention."""
    head = models.build("jca", **SMALL_KWARGS["jca"], regressor_input="reference").eval()
    audio, visual = inputs()
    with torch.inference_mode():
        out = head(audio, visual)
        head.W_ha.weight.add_(1.0)  # changes X_att,a only
        assert torch.equal(head(audio, visual), out)
        head.encoder1.weight.add_(1.0)  # X_a enters J, so X_att,v changes
        assert not torch.allclose(head(audio, visual), out)


def test_jca_rejects_unknown_modes():
    with pytest.raises(ValueError, match="regressor_input"):
        heads.JCA(regressor_input="concat")
    with pytest.raises(ValueError, match="regressors"):
        heads.JCA(regressors="three")


def jca_reference_shapes(seq: int, da: int, dv: int, regressors: dict[str, int], inputs: int):
    """The reference CAM's names and shapes (SPEC 5.1): attention, then ``name -> outputs``."""
    shapes = {
        "encoder1.weight": (128, da),
        "encoder1.bias": (128,),
        "encoder2.weight": (128, dv),
        "encoder2.bias": (128,),
        "affine_a.weight": (seq, seq),
        "affine_v.weight": (seq, seq),
        "W_a.weight": (32, seq),
        "W_v.weight": (32, seq),
        "W_ca.weight": (32, 256),
        "W_cv.weight": (32, 256),
        "W_ha.weight": (seq, 32),
        "W_hv.weight": (seq, 32),
    }
    for name, outputs in regressors.items():
        shapes[f"{name}.0.weight"] = (128, inputs)
        shapes[f"{name}.0.bias"] = (128,)
        shapes[f"{name}.2.weight"] = (outputs, 128)
        shapes[f"{name}.2.bias"] = (outputs,)
    return shapes


def test_jca_reference_layouts_load_strictly():
    """640-input regressors: the journal CAM (L = 16, vregressor/aregressor) and the CVPRW CAM
    (L = 8) with one 2-output regressor, on 512-d I3D-TCN / ResNet18 features."""
    journal = models.build("jca", seq_len=16, regressor_input="reference", regressors="separate")
    shapes = jca_reference_shapes(16, 512, 512, {"vregressor": 1, "aregressor": 1}, 640)
    load_reference(journal, shapes)
    assert parameter_count(journal) == sum(torch.Size(s).numel() for s in shapes.values())
    cvpr = models.build("jca", seq_len=8, regressor_input="reference")
    load_reference(cvpr, jca_reference_shapes(8, 512, 512, {"regressor": 2}, 640))
    with torch.inference_mode():
        out = journal.eval()(torch.randn(2, 16, 512), torch.randn(2, 16, 512))
    assert out.shape == (2, 16, 2)


def test_jca_reference_names():
    """CVPRW names and shapes (SPEC 5.1) at L = 8 load strictly; the paper's regressor: 256."""
    da, dv = 512, 1024
    shapes = jca_reference_shapes(8, da, dv, {"regressor": 2}, 256)
    load_reference(models.build("jca", audio_dim=da, visual_dim=dv, seq_len=8), shapes)


@pytest.mark.parametrize("name", ["concat", "cross_attention", "leader_follower"])
def test_baselines_have_no_positional_bias(name):
    """These fuse per time step or attend over time without positions: permuting the clips of
    a sequence permutes the outputs (the JCA's L x L weights do not have this symmetry)."""
    head = models.build(name, **SMALL_KWARGS[name]).eval()
    audio, visual = inputs()
    order = torch.tensor([2, 0, 3, 1])
    with torch.inference_mode():
        out = head(audio, visual)
        assert torch.allclose(head(audio[:, order], visual[:, order]), out[:, order], atol=1e-6)
    jca = models.build("jca", **SMALL_KWARGS["jca"]).eval()
    with torch.inference_mode():
        out = jca(audio, visual)
        assert not torch.allclose(jca(audio[:, order], visual[:, order]), out[:, order])


def test_cross_attention_uses_the_other_modality():
    """Cross-attention mixes time steps through the A-V correlation, concat does not."""
    audio, visual = inputs()
    changed = visual.clone()
    changed[:, 0] += 1.0
    for name, mixes in (("cross_attention", True), ("concat", False)):
        head = models.build(name, **SMALL_KWARGS[name]).eval()
        with torch.inference_mode():
            diff = (head(audio, visual) - head(audio, changed))[:, 1:].abs().max()
        assert (diff > 0) == mixes, name
