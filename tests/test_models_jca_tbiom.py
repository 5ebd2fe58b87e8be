"""The journal JCA as released: parameter count, reference names, equations, checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from modelcheck import (
    assert_deterministic,
    assert_gradients,
    assert_round_trip,
    load_reference,
    parameter_count,
)

from avemo import models
from avemo.models import jca_tbiom, layouts

# small widths: 4 positions of 6, L = 5, Joint 8 wide
SMALL = {"audio_dim": 6, "positions": 4, "seq_len": 5, "joint_dim": 8, "hidden": 3}


def small_inputs(batch: int = 2):
    generator = torch.Generator().manual_seed(0)
    audio = torch.randn(batch, 5, 6, generator=generator)
    visual = torch.randn(batch, 5, 4 * 6, generator=generator)
    return audio, visual


def reference_shapes() -> dict[str, tuple]:
    """Names and shapes of the released ``orig_cam.CAM`` (SPEC 5.2), L = 16."""
    shapes = {}

    def linear(name, n_in, n_out, bias=True):
        shapes[f"{name}.weight"] = (n_out, n_in)
        if bias:
            shapes[f"{name}.bias"] = (n_out,)

    attn = "video_attn.attn"
    linear(f"{attn}.affine_audio", 512, 512)
    linear(f"{attn}.affine_video", 512, 512)
    linear(f"{attn}.affine_v", 512, 49, bias=False)
    linear(f"{attn}.affine_g", 512, 49, bias=False)
    linear(f"{attn}.affine_h", 49, 1, bias=False)
    linear(f"{attn}.affine_feat", 512, 512)
    dcn = "coattn.dcn_layers.0"
    linear(f"{dcn}.dense_coattn.query_linear", 1024, 1024)
    for i in (1, 2):
        linear(f"{dcn}.dense_coattn.key{i}_linear", 16, 16)
        linear(f"{dcn}.dense_coattn.value{i}_linear", 512, 512)
        linear(f"{dcn}.linears.{i - 1}.0", 1024, 512)
    for layer, n_in in ((0, 1024), (1, 512)):
        for suffix in ("", "_reverse"):
            shapes[f"Joint.rnn.weight_ih_l{layer}{suffix}"] = (1024, n_in)
            shapes[f"Joint.rnn.weight_hh_l{layer}{suffix}"] = (1024, 256)
            shapes[f"Joint.rnn.bias_ih_l{layer}{suffix}"] = (1024,)
            shapes[f"Joint.rnn.bias_hh_l{layer}{suffix}"] = (1024,)
    shapes["Joint.init_hidden"] = (8, 256)
    linear("Joint.linear", 1536, 512)
    for head in ("vregressor", "aregressor"):
        linear(f"{head}.0", 512, 128)
        linear(f"{head}.3", 128, 1)
    return shapes


def test_parameter_count_and_reference_names():
    model = models.build("jca_tbiom")
    expected = sum(torch.Size(s).numel() for s in reference_shapes().values())
    assert parameter_count(model) == expected == 8_586_323  # ~8.59M
    state = load_reference(model, reference_shapes())
    prefixed = {f"module.{k}": v for k, v in state.items()}
    converted = layouts.state_dicts(prefixed, "jca-journal")["head"]  # strict tables
    assert converted.keys() == state.keys()
    assert all(torch.equal(converted[k], v) for k, v in state.items())
    model.load_state_dict(converted, strict=True)


def test_default_shapes():
    model = models.build("jca_tbiom").eval()
    with torch.inference_mode():
        assert model(torch.randn(2, 16, 512), torch.randn(2, 16, 25088)).shape == (2, 16, 2)


def test_small_shapes_gradients_round_trip(tmp_path):
    model = models.build("jca_tbiom", **SMALL)
    audio, visual = small_inputs()
    assert assert_deterministic(model, audio, visual).shape == (2, 5, 2)
    assert_gradients(model, audio, visual)
    assert_round_trip(model, (audio, visual), tmp_path)


def test_inputs_are_l2_normalised_by_the_model():
    model = models.build("jca_tbiom", **SMALL).eval()
    audio, visual = small_inputs()
    with torch.inference_mode():
        assert torch.allclose(model(audio, visual), model(3 * audio, 0.5 * visual), atol=1e-6)


def test_position_attention_equations():
    """Per clip: weights over the P rows from tanh(affine_v(v'_p) + g_p), then affine_feat."""
    attn = jca_tbiom.PositionAttention(dim=6, positions=4).eval()
    audio, visual = small_inputs(batch=1)
    with torch.inference_mode():
        out = attn(visual, audio)
        for t in range(5):
            rows = visual[0, t].view(4, 6)
            hidden = attn.affine_v(F.relu(attn.affine_video(rows)))  # P x P
            g = attn.affine_g(F.relu(attn.affine_audio(audio[0, t])))  # P
            z = torch.stack([attn.affine_h(torch.tanh(hidden[p] + g[p]))[0] for p in range(4)])
            pooled = (z.softmax(0)[:, None] * rows).sum(0)
            assert torch.allclose(out[0, t], attn.affine_feat(pooled), atol=1e-6)


def test_co_attention_uses_un_updated_inputs():
    layer = jca_tbiom.CoAttentionLayer(6, 6, seq_len=5, dropout=0.0).eval()
    audio, visual = small_inputs(batch=1)
    video = visual[..., :6]
    with torch.inference_mode():
        new_video, new_audio = layer(video, audio)
        w1, w2 = layer.dense_coattn(video, audio)
        assert torch.allclose(new_video, video + layer.linears[0](w1))
        assert torch.allclose(new_audio, audio + layer.linears[1](w2))
        query = layer.dense_coattn.query_linear(torch.cat([video, audio], -1))
        key = layer.dense_coattn.key1_linear(video.transpose(1, 2))
        scores = torch.tanh(key @ query / 12**0.5)
        value = layer.dense_coattn.value1_linear(video)
        assert torch.allclose(w1, torch.relu(torch.tanh(value @ scores)), atol=1e-6)


def test_joint_initial_state_order():
    """init_hidden rows 0..3 are h0 and 4..7 c0, in (layer, direction) order, for every item."""
    joint = jca_tbiom.JointLSTM(12, 8, 2).eval()
    x = torch.randn(3, 5, 12)
    h0, c0 = joint.init_hidden[:4], joint.init_hidden[4:]
    with torch.inference_mode():
        out, _ = joint.rnn(x, (h0[:, None].expand(-1, 3, -1), c0[:, None].expand(-1, 3, -1)))
        expected = F.normalize(joint.linear(torch.cat([x, out], -1)), dim=-1)
        assert torch.allclose(joint(x), expected, atol=1e-6)


@pytest.mark.parametrize("seq_len", [5, 7])
def test_sequence_length_is_a_constructor_argument(seq_len):
    model = models.build("jca_tbiom", **{**SMALL, "seq_len": seq_len}).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, seq_len, 6), torch.randn(1, seq_len, 24))
    assert out.shape == (1, seq_len, 2)
