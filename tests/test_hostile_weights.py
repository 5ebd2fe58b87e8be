"""Hostile weights files cost bounded memory: a checkpoint's tensor table is checked against the
module built on the meta device before any of the module's memory is allocated."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from avemo import models
from avemo.errors import AvemoError

HUGE = 10**7  # feature width asked for by the crafted headers: ~10 GB of float32 weights


def jca_header(width: int = HUGE) -> dict:
    return {
        "format": 1,
        "builder": "jca",
        "component": "head",
        "kwargs": {"audio_dim": width, "visual_dim": width, "seq_len": 8},
        "preprocessing": {},
        "provenance": {"trained": True, "source": "crafted"},
    }


def craft(path, table: dict, data: bytes = b"", header: dict | None = None):
    """A safetensors file written by hand: any tensor table, any data bytes."""
    table = dict(table)
    table["__metadata__"] = {"avemo": json.dumps(header or jca_header())}
    raw = json.dumps(table).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def expect_error(path, *words):
    with pytest.raises(AvemoError) as info:
        models.load(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    for word in words:
        assert word in message
    return message


def test_a_huge_module_without_its_tensors_is_refused_in_bounded_memory(tmp_path):
    """The 700-byte file of the issue: measured in a fresh process (peak RSS), as a user runs it."""
    path = tmp_path / "jca.safetensors"
    save_file({"affine_a": torch.zeros(1)}, str(path), metadata={"avemo": json.dumps(jca_header())})
    assert path.stat().st_size < 1000
    script = textwrap.dedent(
        f"""
        import resource, sys
        from avemo import models
        from avemo.errors import AvemoError
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            models.load({str(path)!r})
        except AvemoError as error:
            print(error)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) // 1024)  # MiB of peak memory the load added
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    message, grown = result.stdout.strip().splitlines()
    assert "missing tensor(s)" in message and "jca.safetensors" in message
    assert int(grown) < 200  # the unchecked module would be ~10,000 MiB


@pytest.mark.parametrize(
    "table, data",
    [
        # the right name and shape for a huge module, but no bytes behind them
        ({"affine_a": {"dtype": "F32", "shape": [HUGE, 8], "data_offsets": [0, 32 * HUGE]}}, b""),
        # a shape whose size the byte range cannot hold
        ({"affine_a": {"dtype": "F32", "shape": [HUGE, HUGE], "data_offsets": [0, 4]}}, b"1234"),
        ({"w": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}, b"1234"),
        ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"1234"),
        ({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}, b"1234"),
        ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}, b"12345678"),
        ({"w": {"dtype": "F32", "shape": [1], "data_offsets": "0-4"}}, b"1234"),
        ({"w": [1, 2, 3]}, b""),
    ],
)
def test_crafted_tensor_tables_are_refused_before_building(tmp_path, monkeypatch, table, data):
    built = []
    real_build = models.checkpoint.build
    monkeypatch.setattr(
        models.checkpoint, "build", lambda name, **kw: built.append(name) or real_build(name, **kw)
    )
    path = craft(tmp_path / "crafted.safetensors", table, data)
    message = expect_error(path)
    assert "safetensors" in message or "truncated" in message
    assert built == []  # refused from the table alone: not even the meta module was built


@pytest.mark.parametrize(
    "entry, words",
    [
        ({"dtype": "F32", "shape": [HUGE, 8], "data_offsets": [0, 32 * HUGE]}, ["outside"]),
        ({"dtype": "F32", "shape": [HUGE, HUGE], "data_offsets": [0, 4]}, ["cannot hold"]),
        ({"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}, ["dtype"]),
        ({"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}, ["shape"]),
        ({"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}, ["outside"]),
        ({"dtype": "F32", "shape": [1], "data_offsets": [0]}, ["data_offsets"]),
        ("F32", ["not an object"]),
    ],
)
def test_avemo_checks_the_table_itself(entry, words):
    """The same checks without relying on safetensors' own header parser."""
    problem = models.checkpoint._bad_entry(entry, data_size=4)
    for word in words:
        assert word in problem
    assert (
        models.checkpoint._bad_entry({"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, 4)
        is None
    )


def test_right_names_wrong_shapes_are_refused_on_the_meta_device(tmp_path, monkeypatch):
    small = models.build("jca", audio_dim=4, visual_dim=4, seq_len=8)
    path = tmp_path / "shapes.safetensors"
    tensors = {k: v.contiguous() for k, v in small.state_dict().items()}
    save_file(tensors, str(path), metadata={"avemo": json.dumps(jca_header())})
    devices = []
    real_build = models.checkpoint.build
    monkeypatch.setattr(
        models.checkpoint,
        "build",
        lambda name, **kw: devices.append(torch.empty(0).device.type) or real_build(name, **kw),
    )
    message = expect_error(path, "has shape", "the model needs")
    assert str(HUGE) in message
    assert devices == ["meta"]


def test_good_checkpoints_still_load(tmp_path):
    torch.manual_seed(0)
    net = models.build("jca", audio_dim=4, visual_dim=6, seq_len=8, proj_dim=8, attn_dim=8)
    path = tmp_path / "ok.safetensors"
    models.save(net, path, provenance={"trained": False})
    loaded = models.load(path)
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    # weights stored as float16 still load (converted), as load_state_dict always allowed
    half = tmp_path / "half.safetensors"
    save_file(
        {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()},
        str(half),
        metadata={"avemo": json.dumps(models.read_header(path))},
    )
    assert models.load(half).state_dict()["affine_a.weight"].dtype == torch.float32
