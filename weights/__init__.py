"""Data package ``avemo.weights``: the manifest of named weights and the bundled checkpoints.

The files here are installed with avemo; the code that reads them is in ``avemo.hub``.
"""

from importlib.resources import files

DIRECTORY = files(__name__)
