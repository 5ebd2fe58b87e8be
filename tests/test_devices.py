"""Devices: one parse of --device for torch and onnxruntime."""

import onnxruntime
import pytest
import torch

from avemo.devices import DeviceSpec, onnx_providers, parse_device, torch_device
from avemo.errors import AvemoError


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("auto", DeviceSpec("auto")), (None, DeviceSpec("auto")), ("CPU", DeviceSpec("cpu")),
     (" cuda ", DeviceSpec("cuda")), ("cuda:1", DeviceSpec("cuda", 1))],
)  # fmt: skip
def test_parse_device(text, parsed):
    assert parse_device(text) == parsed
    assert str(parse_device(str(parsed))) == str(parsed)


@pytest.mark.parametrize("text", ["gpu0", "mps", "cpu:1", "cuda:x", "cuda:", "tpu"])
def test_unknown_devices_are_one_usage_error_for_both_runtimes(text):
    for use in (parse_device, torch_device, onnx_providers):
        with pytest.raises(AvemoError, match="unknown device") as caught:
            use(text)
        assert caught.value.status == 2


def test_torch_device_choices():
    assert torch_device("cpu") == torch.device("cpu")
    assert torch_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(AvemoError, match="CUDA is not available"):
        torch_device("cuda:0")


def test_onnx_providers(monkeypatch):
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    assert onnx_providers("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(AvemoError, match="unknown device"):
        onnx_providers("tpu")
    with pytest.raises(AvemoError, match="unknown device"):
        onnx_providers("cpu:1")
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert onnx_providers("cuda") == ["CPUExecutionProvider"]  # with a warning
    monkeypatch.setattr(
        onnxruntime,
        "get_available_providers",
        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    assert onnx_providers("cuda:1") == [
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]
    assert onnx_providers("auto")[0][0] == "CUDAExecutionProvider"
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]


