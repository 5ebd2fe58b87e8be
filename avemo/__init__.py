"""avemo: per-frame valence and arousal from the face and the voice.

The package reads top-down as the pipeline: ``decode`` (frames and audio) -> ``faces`` (detect,
align) and ``tracking`` -> ``clips`` and ``spectrogram`` -> ``backbones`` -> ``heads`` ->
per-frame values -> ``writers``. ``models`` holds the builder registry and the one checkpoint
format; ``cli`` only parses arguments and calls library functions.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("avemo")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from avemo.errors import AvemoError

__all__ = ["AvemoError", "__version__"]
