"""The exceptions avemo raises for problems a user can fix, and the exit status of each.

Every command follows one exit-status policy (README, "Exit status"):

- 0: every input done (or skipped because its output exists);
- 1: some input failed (an unreadable video, label or checkpoint source; a download that
  failed); each failure is one ``error:`` line naming the file, the other inputs are done;
- 2: a usage or configuration error, found before any input is processed: a bad option, an
  unknown, untrained or wrong kind of model, an output that cannot be written.

Library functions raise :class:`AvemoError` for the whole-run problems (status 2) and
:class:`InputError` for a failed input (status 1); batch commands catch per-file failures and
report them in their result instead of raising.
"""

from __future__ import annotations

import os

USAGE_STATUS = 2  # usage or configuration error
INPUT_STATUS = 1  # some input failed


class AvemoError(Exception):
    """A problem with a user's request (options, models, outputs), reported as one line.

    The CLI prints ``error: <message>`` (naming the file when there is one) and exits with
    status 2; it never shows a traceback for an ``AvemoError``.
    """

    status = USAGE_STATUS

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InputError(AvemoError):
    """An input that could not be read or used (a video, label file, cache, checkpoint source,
    download): status 1, like a failed file of a batch."""

    status = INPUT_STATUS
