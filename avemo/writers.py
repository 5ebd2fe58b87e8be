"""Output writers: one small class per format behind :func:`get_writer`.

Every writer takes a pandas table and writes it atomically (a temporary file renamed into place,
:func:`avemo.batch.atomic_path`), so an interrupted run never leaves a partial file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from avemo.errors import AvemoError, InputError
from avemo.files import atomic_path
from avemo.labels import left_right

FLOAT_FORMAT = "%.8g"  # significant digits of floats in text tables (values come pre-rounded)
NAN_TEXT = "NaN"  # how missing values are spelled in text tables


class Writer:
    """Writes a table to one file; subclasses set ``extension`` and implement ``write_to``."""

    extension: str = ""
    max_faces: int | None = None  # faces per video the format holds (None: any number)

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


class AbawWriter(Writer):
    """The ABAW challenge's valence-arousal file (SPEC 8) from an annotate table.

    Header ``image_location,valence,arousal``, then ``<video>/%05d.jpg,v,a`` for every frame
    (1-based), where ``<video>`` is the file's stem. The challenge needs a value on every frame:
    frames without a prediction take the nearest earlier one (the nearest later one at the start
    of a video, 0 when the video has none). A table with two faces becomes the Aff-Wild2 pair
    ``<video>_left`` / ``<video>_right`` (:func:`avemo.labels.left_right`, the rule evaluate
    reads them back with).
    """

    extension = ".txt"
    SIDES = ("_left", "_right")
    max_faces = len(SIDES)

    def write(self, table: pd.DataFrame, path: str | os.PathLike) -> list[Path]:
        path = Path(path)
        faces = [f for f in pd.unique(table["face_id"]) if f >= 0] or [-1]
        if len(faces) > len(self.SIDES):
            raise AvemoError(
                f"the abaw format holds one face per file, or a left/right pair; this table has "
                f"{len(faces)} faces (use --max-faces 1 or 2)",
                path,
            )
        if len(faces) == 1:
            targets = {faces[0]: path}
        else:
            try:
                order = left_right(table)
            except InputError as error:
                raise AvemoError(error.message, path) from None
            targets = {
                face: path.with_name(path.stem + side + path.suffix)
                for face, side in zip(order, self.SIDES, strict=True)
            }
        for face, target in targets.items():
            with atomic_path(target) as tmp:
                tmp.write_text(self.render(table[table["face_id"] == face], target.stem))
        return list(targets.values())

    @staticmethod
    def render(table: pd.DataFrame, video: str) -> str:
        values = table[["valence", "arousal"]].ffill().bfill().fillna(0.0)
        lines = ["image_location,valence,arousal"]
        lines += [
            f"{video}/{frame + 1:05d}.jpg,{v:.6f},{a:.6f}"
            for frame, v, a in zip(
                table["frame"], values["valence"], values["arousal"], strict=True
            )
        ]
        return "\n".join(lines) + "\n"


WRITERS = {
    "csv": lambda: DelimitedWriter(",", ".csv"),
    "tsv": lambda: DelimitedWriter("\t", ".tsv"),
    "abaw": AbawWriter,
}


def get_writer(fmt: str) -> Writer:
    """The writer for ``fmt`` (one of ``WRITERS``: csv, tsv)."""
    try:
        return WRITERS[fmt.strip().lower()]()
    except KeyError:
        raise AvemoError(f"unknown output format {fmt!r}: use {', '.join(WRITERS)}") from None
