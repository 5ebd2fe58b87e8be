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
- :mod:`~avemo.models.expression`: the FER2013 mini-Xception of the default model.
- :mod:`~avemo.models.pipeline`: ``Pipeline`` and ``assemble`` (backbones + head in one).
- :mod:`~avemo.models.layouts`: the published checkpoints' key layouts -> avemo modules.
"""

from avemo.models.checkpoint import (
    FORMAT,
    METADATA_KEY,
    UNTRAINED,
    header_of,
    load,
    read_header,
    save,
)
from avemo.models.pipeline import Pipeline, assemble
from avemo.models.registry import (
    COMPONENTS,
    ROLES,
    Builder,
    build,
    builder,
    builders,
    register,
    role_of,
)

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
