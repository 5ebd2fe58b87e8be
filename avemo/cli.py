"""Command-line interface: parses arguments and calls library functions, nothing more.

Exit status: 0 when every file succeeded, 1 when any file failed, 2 for usage errors.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from avemo import __version__
from avemo.errors import AvemoError

app = typer.Typer(
    name="avemo",
    help="Per-frame valence and arousal from the face and the voice.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"avemo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more detail.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )


Inputs = Annotated[
    list[Path], typer.Argument(help="Video files and/or folders (searched recursively).")
]
OutputDir = Annotated[Path, typer.Option("--output", "-o", help="Output folder.")]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Recompute outputs that already exist.")
]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
Detector = Annotated[str, typer.Option("--detector", help="centerface (bundled) or scrfd.")]
DetectorModel = Annotated[
    Path | None,
    typer.Option(
        "--detector-model", help="Model file for --detector scrfd (an insightface .onnx)."
    ),
]
MaxFaces = Annotated[
    int,
    typer.Option(
        "--max-faces", min=1, help="Keep the N dominant face tracks (by size and duration)."
    ),
]


@app.command()
def sample() -> None:
    """Print the path of the sample clip installed with avemo (for trying it out)."""
    from avemo.utils import sample_video

    typer.echo(str(sample_video()))


def main() -> None:
    """Entry point of the ``avemo`` console script."""
    try:
        app()
    except AvemoError as error:  # a problem with the whole command, not one file
        if os.environ.get("AVEMO_DEBUG"):
            raise
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
