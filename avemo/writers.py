"""Output writers: one small class per format behind :func:`get_writer`.

Every writer takes a pandas table and writes it atomically (a temporary file renamed into place,
:func:`avemo.batch.atomic_path`), so an interrupted run never leaves a partial file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from avemo.batch import atomic_path
from avemo.errors import AvemoError

FLOAT_FORMAT = "%.8g"  # significant digits of floats in text tables (values come pre-rounded)
NAN_TEXT = "NaN"  # how missing values are spelled in text tables


class Writer:
    """Writes a table to one file; subclasses set ``extension`` and implement ``write_to``."""

    extension: str = ""

    def write(self, table: pd.DataFrame, path: str | os.PathLike) -> Path:
        """Write ``table`` to ``path`` atomically; returns ``path``."""
        path = Path(path)
        with atomic_path(path) as tmp:
            self.write_to(table, tmp)
        return path

    def write_to(self, table: pd.DataFrame, path: Path) -> None:
        raise NotImplementedError


class DelimitedWriter(Writer):
    """Comma- or tab-separated text with a header line; NaN written as ``NaN``."""

    def __init__(self, separator: str = ",", extension: str = ".csv"):
        self.separator = separator
        self.extension = extension

    def write_to(self, table: pd.DataFrame, path: Path) -> None:
        table.to_csv(
            path,
            sep=self.separator,
            index=False,
            na_rep=NAN_TEXT,
            float_format=FLOAT_FORMAT,
            lineterminator="\n",
        )


WRITERS = {
    "csv": lambda: DelimitedWriter(",", ".csv"),
    "tsv": lambda: DelimitedWriter("\t", ".tsv"),
}


def get_writer(fmt: str) -> Writer:
    """The writer for ``fmt`` (one of ``WRITERS``: csv, tsv)."""
    try:
        return WRITERS[fmt.strip().lower()]()
    except KeyError:
        raise AvemoError(f"unknown output format {fmt!r}: use {', '.join(WRITERS)}") from None
