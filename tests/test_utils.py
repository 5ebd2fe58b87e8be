import hashlib

import pytest
import torch

from avemo.devices import torch_device
from avemo.errors import AvemoError
from avemo.files import sample_video, sha256_file


def test_sample_video_is_the_installed_carphone_clip(carphone):
    assert sample_video() == carphone
    assert sample_video().stat().st_size > 100_000


def test_torch_device_choices():
    assert torch_device("cpu") == torch.device("cpu")
    assert torch_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(AvemoError, match="unknown device"):
        torch_device("gpu0")
    with pytest.raises(AvemoError):
        torch_device("mps")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(AvemoError, match="CUDA is not available"):
        torch_device("cuda:0")


def test_sha256_file(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"avemo" * 1000)
    assert sha256_file(path, chunk=7) == hashlib.sha256(b"avemo" * 1000).hexdigest()
