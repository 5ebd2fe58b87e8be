"""The one exception type avemo raises for problems a user can fix (bad input, missing files)."""

from __future__ import annotations

import os


class AvemoError(Exception):
    """A problem with a user's input, reported as one line naming the file.

    The CLI prints ``str(error)`` and moves on to the next file; it never shows a traceback
    for an ``AvemoError``.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)
