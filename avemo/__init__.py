"""avemo: per-frame valence and arousal from the face and the voice.

The package reads top-down as the pipeline: ``decode`` (frames and audio) -> ``face`` (detect,
track, align) -> ``clips`` and ``spectrogram`` -> ``features`` (the one feature engine) ->
``models`` (every network, the registry and the checkpoint format) -> ``values`` (per-frame
values) -> ``writers``. The commands (``annotate``, ``faces``, ``extract``, ``train``,
``evaluate``, ``convert``) are one library function each; ``cli`` only parses arguments, calls
them and reports. README "Architecture" has the map.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("avemo")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

import importlib
import sys
import types

from avemo.errors import AvemoError, InputError

__all__ = [
    "AvemoError",
    "InputError",
    "__version__",
    "annotate",
    "annotate_videos",
    "evaluate",
    "faces",
    "faces_videos",
]

# Public functions imported on first use, so that `import avemo` stays light (no torch, pandas):
# name -> the module that defines it.
_LAZY = {
    "annotate": "avemo.annotate",
    "annotate_videos": "avemo.annotate",
    "evaluate": "avemo.evaluate",
    "faces": "avemo.faces",
    "faces_videos": "avemo.faces",
}


def __getattr__(name: str):
    if name in _LAZY:
        function = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = function
        return function
    raise AttributeError(f"module 'avemo' has no attribute {name!r}")


class _Package(types.ModuleType):
    """``avemo.evaluate`` (``avemo.annotate``, ``avemo.faces``) stays the function when its module
    is imported.

    Python binds an imported submodule as an attribute of its package, which would replace the
    function of the same name; this binds the function instead. ``from avemo.evaluate import X``
    still gives the module's ``X``.
    """

    def __setattr__(self, name: str, value) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
