"""benchmarks/gpu.py's dry run on the CPU: the CUDA check's every step runs and reports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--seconds", "1",
               "--train-seconds", "0.5", "--batch-sizes", "8", "--stride", "16",
               "--keep", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "check face detection on onnxruntime's CUDA provider: skipped" in out
    for model in ("default model", "journal JCA"):
        assert f"check {model} networks on the GPU: skipped (inputs on ['cpu']" in out
        assert f"check {model} float32 cpu vs cpu: skipped (max |difference| of raw values 0" in out
        line = re.search(rf"^{model}, fp32, batch 8: ([\d.]+) fps over 30 frames, .*$", out, re.M)
        assert line and float(line[1]) > 0, out
        assert "peak GPU memory n/a" in line[0] and '"backbones"' in line[0]
    assert "FAIL" not in out and out.rstrip().endswith("no GPU check was made)")
    # the pipeline came from the run's own training: trained head, random backbones
    from avemo import models

    header = models.read_header(tmp_path / "train" / "jca_journal_pipeline.safetensors")
    assert header["provenance"]["trained"] is True
    assert header["provenance"]["backbones_trained"] is False
    assert header["kwargs"]["seq_len"] == 16
