"""JMT: parameter counts, reference names, batch-major output, both modes, checkpoints."""

from __future__ import annotations

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
from avemo.models import jmt, layouts

SMALL = {"dim": 8, "heads": 2, "layers": 2, "ffn_dim": 6, "hidden": 5}
MODES = ["fc", "self_attention"]


def small_inputs(batch: int = 3, length: int = 4):
    generator = torch.Generator().manual_seed(0)
    audio = torch.randn(batch, length, 8, generator=generator)
    visual = torch.randn(batch, length, 8, generator=generator)
    return audio, visual


def reference_shapes(mode: str) -> dict[str, tuple]:
    """Names and shapes of the reference (SPEC 5.3) at 512 wide, 1 layer, FFN 512."""
    shapes = {}

    def linear(name, n_in, n_out):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (n_out, n_in), (n_out,)

    def attention(name):
        shapes[f"{name}.in_proj_weight"], shapes[f"{name}.in_proj_bias"] = (1536, 512), (1536,)
        linear(f"{name}.out_proj", 512, 512)

    def block(name):
        layer = f"{name}.layers.0"
        attention(f"{layer}.attention")
        linear(f"{layer}.feed_forward.0", 512, 512)
        linear(f"{layer}.feed_forward.2", 512, 512)
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[f"{layer}.{norm}.weight"], shapes[f"{layer}.{norm}.bias"] = (512,), (512,)

    mm = "mm_transformer"
    for encoder in ("visual_encoder", "physiological_encoder", "joint_representation_encoder"):
        block(f"{mm}.{encoder}")
    for cross in ("cross_attention_v", "cross_attention_p", "cross_attention_pv"):
        attention(f"{mm}.{cross}")
    linear(f"{mm}.out_layer_pv", 1024, 512)
    if mode == "fc":
        linear(f"{mm}.out_layer1", 3072, 1024)
    else:
        block(f"{mm}.final_visual_encoder")
        attention(f"{mm}.final_self_attention")
    out = 1024 if mode == "fc" else 512
    for head in ("vregressor", "aregressor"):
        linear(f"{head}.0", out, 128)
        linear(f"{head}.3", 128, 1)
    return shapes


@pytest.mark.parametrize(("mode", "expected"), [("fc", 11_820_034), ("self_attention", 11_170_818)])
def test_parameter_count_and_reference_names(mode, expected):
    """About 11M without the reference's unused final_encoder."""
    model = models.build("jmt", mode=mode)
    shapes = reference_shapes(mode)
    assert parameter_count(model) == sum(torch.Size(s).numel() for s in shapes.values()) == expected
    state = load_reference(model, shapes)
    # fusion_w.pt: DataParallel prefix and the unused final_encoder (3072 wide)
    checkpoint = {f"module.{k}": v for k, v in state.items()}
    checkpoint["module.mm_transformer.final_encoder.layers.0.attention.in_proj_weight"] = (
        torch.zeros(9216, 3072)
    )
    converted = layouts.state_dicts(checkpoint, "jmt")["head"]  # strict tables
    assert converted.keys() == state.keys()
    assert all(torch.equal(converted[k], v) for k, v in state.items())
    model.load_state_dict(converted, strict=True)


@pytest.mark.parametrize(
    ("mode", "attention"), [("fc", "softmax"), ("self_attention", "softmax"), ("fc", "sigmoid")]
)
def test_small_shapes_gradients_round_trip(mode, attention, tmp_path):
    model = models.build("jmt", mode=mode, attention=attention, **SMALL)
    audio, visual = small_inputs()
    assert assert_deterministic(model, audio, visual).shape == (3, 4, 2)
    assert_gradients(model, audio, visual)
    assert_round_trip(model, (audio, visual), tmp_path)


@pytest.mark.parametrize("mode", MODES)
def test_batch_major_and_no_positions(mode):
    """Each sample's output depends on that sample only (batch-major, unlike the reference's
    FC mode), clips attend without positional encoding, and inputs are L2-normalised."""
    model = models.build("jmt", mode=mode, **SMALL).eval()
    audio, visual = small_inputs()
    order = torch.tensor([3, 1, 0, 2])
    with torch.inference_mode():
        out = model(audio, visual)
        for i in range(3):
            assert torch.allclose(
                model(audio[i : i + 1], visual[i : i + 1]), out[i : i + 1], atol=1e-5
            )
        assert torch.allclose(model(audio[:, order], visual[:, order]), out[:, order], atol=1e-5)
        assert torch.allclose(model(2 * audio, 0.1 * visual), out, atol=1e-5)


def test_default_shapes():
    model = models.build("jmt").eval()
    with torch.inference_mode():
        assert model(torch.randn(2, 16, 512), torch.randn(2, 16, 512)).shape == (2, 16, 2)


def test_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        models.build("jmt", mode="sigmoid")


def test_sigmoid_attention():
    """Each query-key pair weighted by sigmoid(q.k / sqrt(d_head)), per head, then out_proj."""
    attention = jmt.Attention(8, 2, "sigmoid").eval()
    softmax = jmt.Attention(8, 2, "softmax").eval()
    softmax.load_state_dict(attention.state_dict())
    query, other = torch.randn(3, 4, 8), torch.randn(3, 5, 8)
    wq, wk, wv = attention.in_proj_weight.chunk(3)
    bq, bk, bv = attention.in_proj_bias.chunk(3)
    with torch.inference_mode():
        q, k, v = query @ wq.T + bq, other @ wk.T + bk, other @ wv.T + bv
        sig, soft = [], []
        for part in (slice(0, 4), slice(4, 8)):  # two heads of 4
            scores = q[..., part] @ k[..., part].transpose(1, 2) / 2.0  # sqrt(4)
            sig.append(torch.sigmoid(scores) @ v[..., part])
            soft.append(torch.softmax(scores, -1) @ v[..., part])
        sig, soft = attention.out_proj(torch.cat(sig, -1)), attention.out_proj(torch.cat(soft, -1))
        assert torch.allclose(attention(query, other, other)[0], sig, atol=1e-6)
        assert torch.allclose(softmax(query, other, other)[0], soft, atol=1e-6)
    with pytest.raises(ValueError, match="attention"):
        models.build("jmt", attention="relu")
