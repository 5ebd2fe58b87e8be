"""Every network avemo runs, the builder registry and the checkpoint format.

This package imports no media code (no PyAV, OpenCV, insightface, onnxruntime or pandas; checked
by the import contracts in ``pyproject.toml``): ``import avemo.models`` needs only torch,
torchvision, safetensors and numpy, so a checkpoint can be built, loaded, trained or exported
anywhere.

- :mod:`~avemo.models.registry`: ``register``, ``build``, ``builder(s)``; the role map.
- :mod:`~avemo.models.checkpoint`: ``save``, ``load``, ``read_header`` (safetensors + JSON).
- :mod:`~avemo.models.backbones`: R(2+1)D-18, R3D-18, ResNet18-GRU, audio ResNet18 (SPEC 4).
- :mod:`~avemo.models.i3d`: I3D and I3D-TCN (SPEC 4).
- :mod:`~avemo.models.heads`: JCA and the ablation baselines (SPEC 5.1, 5.4).
- :mod:`~avemo.models.jca_tbiom`: the journal JCA as released (SPEC 5.2).
- :mod:`~avemo.models.jmt`: the joint multimodal transformer (SPEC 5.3).
- :mod:`~avemo.models.expression`: what the default model means (classes, valence/arousal
  table, crop framing; no torch), :mod:`~avemo.models.mini_xception` its FER2013 network.
- :mod:`~avemo.models.deploy`: the networks as the runtimes run them, and ONNX export.
- :mod:`~avemo.models.pipeline`: ``Pipeline`` and ``assemble`` (backbones + head in one).
- :mod:`~avemo.models.layouts`: the published checkpoints' key layouts -> avemo modules.
"""

import importlib

# name -> the submodule defining it. Loaded on first use (PEP 562), so that reading a header,
# the role map or the default model's constants (avemo.models.expression) does not import torch:
# the default annotate path runs without it when a non-torch backend is installed.
_EXPORTS = {
    **dict.fromkeys(
        ("FORMAT", "METADATA_KEY", "UNTRAINED", "header_of", "load", "read_header", "save"),
        "checkpoint",
    ),
    **dict.fromkeys(("Pipeline", "assemble"), "pipeline"),
    **dict.fromkeys(
        ("COMPONENTS", "ROLES", "Builder", "build", "builder", "builders", "register", "role_of"),
        "registry",
    ),
}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"avemo.models.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    try:  # a submodule: avemo.models.backbones and the like
        return importlib.import_module(f"avemo.models.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"avemo.models.{name}":
            raise
    raise AttributeError(f"module 'avemo.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "COMPONENTS",
    "FORMAT",
    "METADATA_KEY",
    "ROLES",
    "UNTRAINED",
    "Builder",
    "Pipeline",
    "assemble",
    "build",
    "builder",
    "builders",
    "header_of",
    "load",
    "read_header",
    "register",
    "role_of",
    "save",
]
