"""The package layout's promises: the import contracts hold, and the models need no media code."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what `import avemo.models` (and building every registered network) must never load
MEDIA = ("av", "cv2", "insightface", "onnxruntime", "pandas", "torchaudio", "scipy", "skimage")


def test_models_load_no_media_code():
    script = (
        "import json, sys\n"
        "import avemo.models as m\n"
        "for name, entry in m.builders().items():\n"
        "    if entry.component != 'pipeline': m.build(name)\n"
        "print(json.dumps(sorted({k.split('.')[0] for k in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(result.stdout))
    assert {"torch", "torchvision", "numpy", "avemo"} <= loaded
    assert not loaded & set(MEDIA), sorted(loaded & set(MEDIA))


def test_import_contracts_hold():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(lint).exists():
        pytest.fail("lint-imports is not installed (it is in the dev extra: import-linter)")
    result = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout
