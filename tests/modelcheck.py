"""Checks shared by the model tests: gradients, checkpoint round trip, eval determinism."""

from __future__ import annotations

import torch
from torch import nn

from avemo import models


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def assert_gradients(module: nn.Module, *inputs: torch.Tensor) -> None:
    """Every trainable parameter gets a non-zero gradient from a random projection of the output.

    Train mode, so batch norm uses batch statistics and dropout is active (a random projection,
    not a plain sum: a sum of layer-normalised outputs would have zero gradient by design).
    """
    torch.manual_seed(0)
    module.train().zero_grad()
    out = module(*inputs)
    (out * torch.randn_like(out)).sum().backward()
    for name, parameter in module.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None, f"no gradient reaches {name}"
            assert parameter.grad.abs().sum() > 0, f"zero gradient at {name}"
    module.zero_grad()


def assert_round_trip(module: nn.Module, inputs: tuple, tmp_path) -> nn.Module:
    """save -> load gives a module in eval mode with bit-identical outputs; returns it.

    The loaded module's output is kept as ``loaded.test_output`` for further checks.
    """
    module.eval()
    path = tmp_path / f"{module.avemo_config['builder']}.safetensors"
    models.save(module, path, provenance={"trained": False, "source": "test"})
    loaded = models.load(path)
    assert not loaded.training
    assert type(loaded) is type(module)
    with torch.inference_mode():
        loaded.test_output = loaded(*inputs)
        assert torch.equal(loaded.test_output, module(*inputs))
    return loaded


def assert_deterministic(module: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    """Two eval-mode calls give identical outputs (dropout off, no batch statistics)."""
    module.eval()
    with torch.inference_mode():
        first = module(*inputs)
        assert torch.equal(first, module(*inputs))
    return first


def load_reference(module: nn.Module, shapes: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """Load a state dict built from reference names and shapes, strictly; returns it.

    The module's own state dict must have exactly these names and shapes, so the published
    checkpoints of the reference code load without renaming.
    """
    own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert own == {k: tuple(v) for k, v in shapes.items()}
    generator = torch.Generator().manual_seed(1)
    state = {
        k: torch.tensor(7)
        if k.endswith("num_batches_tracked")
        else torch.randn(s, generator=generator)
        for k, s in shapes.items()
    }
    module.load_state_dict(state, strict=True)
    for key, value in module.state_dict().items():
        assert torch.equal(value, state[key]), key
    return state
