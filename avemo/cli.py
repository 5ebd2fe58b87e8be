"""Command-line interface: parses arguments and calls library functions, nothing more.

Exit status: 0 when every file succeeded, 1 when any file failed, 2 for usage errors.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from avemo import __version__
from avemo.errors import AvemoError
from avemo.face.align import CROP_SIZES
from avemo.face.detect import WORKING_SIZE

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

DetectSize = Annotated[
    int,
    typer.Option("--detect-size", min=32, help="Longer side (px) of the image the detector sees."),
]
Threshold = Annotated[
    float | None,
    typer.Option(
        "--threshold",
        min=0.0,
        max=1.0,
        help="Minimum detection score (default: the detector's own).",
    ),
]
DetectEvery = Annotated[
    int,
    typer.Option(
        "--detect-every",
        min=1,
        help="Detect on every K-th frame only, interpolating the faces in between.",
    ),
]
Progress = Annotated[
    bool | None,
    typer.Option(
        "--progress/--no-progress", help="Progress bars (default: when stderr is a terminal)."
    ),
]


@app.command()
def sample() -> None:
    """Print the path of the sample clip installed with avemo (for trying it out)."""
    from avemo.files import sample_video

    typer.echo(str(sample_video()))


@app.command()
def annotate(
    inputs: Inputs,
    output: OutputDir,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Registry name or checkpoint path of a whole pipeline; default: the bundled "
            "expression model (see README, Default model).",
        ),
    ] = None,
    stride: Annotated[
        int | None,
        typer.Option(
            "--stride",
            help="Compute clips every K frames (K divides 32) and interpolate the others; "
            "default: 1 for the expression model, 8 for pipelines.",
        ),
    ] = None,
    smooth: Annotated[
        bool, typer.Option("--smooth/--no-smooth", help="Reference box filter (SPEC 6).")
    ] = True,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="csv, tsv or abaw (challenge files).")
    ] = "csv",
    device: Device = "auto",
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", min=1, help="Clips per forward pass (default 8)."),
    ] = None,
    bf16: Annotated[
        bool | None,
        typer.Option(
            "--bf16/--no-bf16",
            help="bfloat16 autocast; default: on for pipelines where the hardware has native "
            "bf16 (about 2x faster), off for the expression model.",
        ),
    ] = None,
    detector: Detector = "centerface",
    detector_model: DetectorModel = None,
    detect_size: Annotated[
        int | None,
        typer.Option("--detect-size", help="Longer side (px) the detector works at."),
    ] = None,
    detect_every: Annotated[
        int | None,
        typer.Option(
            "--detect-every",
            min=1,
            help="Run the detector every K frames, boxes interpolated between (default 2).",
        ),
    ] = None,
    max_faces: MaxFaces = 1,
    overwrite: Overwrite = False,
    progress: Progress = None,
) -> None:
    """Write per-frame valence and arousal for every video: OUT/<rel>/<stem>.csv (+ .json)."""
    from avemo.annotate import annotate_videos

    try:
        result = annotate_videos(
            inputs,
            output,
            model=model,
            fmt=fmt,
            overwrite=overwrite,
            stride=stride,
            smooth=smooth,
            device=device,
            batch_size=batch_size,
            bf16=bf16,
            detector=detector,
            detector_model=detector_model,
            detect_size=detect_size,
            detect_every=detect_every,
            max_faces=max_faces,
            progress=sys.stderr.isatty() if progress is None else progress,
        )
    except AvemoError as error:  # the model, an option or the inputs as a whole: usage error
        if os.environ.get("AVEMO_DEBUG"):
            raise
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(result.summary("videos"), err=True)
    raise typer.Exit(result.exit_code)


def main() -> None:
    """Entry point of the ``avemo`` console script."""
    try:
        app()
    except AvemoError as error:  # a problem with the whole command, not one file
        if os.environ.get("AVEMO_DEBUG"):
            raise
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)


# --- avemo weights: named weights, the download cache and verification (avemo.hub) ------------

weights_app = typer.Typer(
    help="List, download, verify and import weights (cache: $AVEMO_HOME, else ~/.cache/avemo).",
    no_args_is_help=True,
)
app.add_typer(weights_app, name="weights")


def _weights_failed(error: AvemoError) -> typer.Exit:
    """Report a failed weights operation on one line; exit status 1."""
    if os.environ.get("AVEMO_DEBUG"):
        raise error
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(1)


def _size(size: int | None) -> str:
    if size is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@weights_app.command("list")
def weights_list() -> None:
    """List the known weights, what they are, and whether they are here."""
    from avemo import hub

    rows = [("NAME", "COMPONENT", "IMPORT", "SIZE", "SHA256", "STATUS")]
    for entry in hub.load_manifest().values():
        rows.append(
            (
                entry.name,
                entry.component,
                entry.import_format or "-",
                _size(entry.size),
                "known" if entry.sha256 else "unknown",
                hub.status(entry),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        typer.echo("  ".join(cells).rstrip())


@weights_app.command("info")
def weights_info(name: Annotated[str, typer.Argument(help="A name from `avemo weights list`.")]):
    """Show everything the manifest and the cache know about NAME."""
    from avemo import hub

    info = hub.describe(hub.get(name))
    for key, value in info.items():
        if isinstance(value, list | tuple):
            value = ", ".join(map(str, value)) or "-"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        typer.echo(f"{key + ':':15} {'-' if value is None else value}")


@weights_app.command("pull")
def weights_pull(
    names: Annotated[list[str], typer.Argument(help="Names from `avemo weights list`.")],
    trust: Annotated[
        bool,
        typer.Option(
            "--trust", help="Download entries without a published sha256 and record their hash."
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the server.")
    ] = 30.0,
) -> None:
    """Download weights into the cache, resuming partial downloads, verifying the sha256."""
    from avemo import hub

    manifest = hub.load_manifest()
    for name in names:
        hub.get(name, manifest)  # an unknown name is a usage error (status 2), before any download
    failed = False
    for name in names:
        try:
            path = hub.pull(name, trust=trust, manifest=manifest, timeout=timeout)
        except AvemoError as error:
            _weights_failed(error)
            failed = True
        else:
            typer.echo(f"{name}: {path}")
    if failed:
        raise typer.Exit(1)


@weights_app.command("verify")
def weights_verify(
    name: Annotated[
        str | None, typer.Argument(help="One name; default: every bundled and cached file.")
    ] = None,
    trust: Annotated[
        bool,
        typer.Option("--trust", help="Record the hash of a present file that has none known."),
    ] = False,
) -> None:
    """Re-hash weights files and compare them with the known sha256."""
    from avemo import hub

    checks = hub.verify(name, trust=trust)
    if not checks:
        typer.echo("no weights files present (`avemo weights pull NAME` downloads one)")
    for check in checks:
        line = f"{check.name}: {check.state}: {check.message}"
        if str(check.path) not in line:
            line += f" ({check.path})"
        typer.echo(line, err=check.failed)
    if any(check.failed for check in checks):
        raise typer.Exit(1)


@weights_app.command("import")
def weights_import(
    sources: Annotated[
        list[str],
        typer.Argument(help="A published checkpoint file or a name from `avemo weights list`."),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="OUT.safetensors (parts: OUT.<part>.safetensors) or a folder."
        ),
    ],
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="tsav, pytorch-i3d, jca-cvpr, jca-journal, jmt or torchvision "
            "(default: the manifest's, else recognised from the keys).",
        ),
    ] = None,
    pipeline: Annotated[
        bool,
        typer.Option("--pipeline", help="Assemble the sources into one pipeline checkpoint."),
    ] = False,
    name: Annotated[
        str | None,
        typer.Option("--name", help="The manifest entry a file is (provenance, licence)."),
    ] = None,
    member: Annotated[
        str | None, typer.Option("--member", help="The checkpoint to use inside a zip archive.")
    ] = None,
    features: Annotated[
        str | None,
        typer.Option("--features", help="R(2+1)D/R3D features: pool (512) or flat (25088)."),
    ] = None,
    regressor: Annotated[
        str | None,
        typer.Option(
            "--regressor",
            help="Reference JCA heads: 'reference' (default) keeps their trained regressor in "
            "compatibility mode ([V | X_att,v]); 'retrain' keeps the attention only, in the "
            "paper's head, with an untrained regressor.",
        ),
    ] = None,
    dimension: Annotated[
        str | None,
        typer.Option(
            "--dimension", help="valence or arousal: what a one-output CVPRW JCA file regresses."
        ),
    ] = None,
    heads: Annotated[
        int | None, typer.Option("--heads", min=1, help="JMT attention heads (default 1).")
    ] = None,
    seq_len: Annotated[
        int | None, typer.Option("--seq-len", min=1, help="Clips per sequence of a pipeline.")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = (
        False
    ),
) -> None:
    """Convert published checkpoints into avemo checkpoints that avemo.models.load rebuilds."""
    from avemo import convert

    def usage(message: str) -> typer.Exit:
        typer.echo(f"error: {message}", err=True)
        return typer.Exit(2)

    if fmt is not None and fmt not in convert.FORMATS:
        raise usage(f"unknown format {fmt!r}; one of {', '.join(convert.FORMATS)}")
    if len(sources) > 1 and not pipeline:
        raise usage("several sources are imported together only with --pipeline")
    if name is not None and len(sources) > 1:
        raise usage("--name describes one source file")
    if features not in {None, "pool", "flat"}:
        raise usage("--features must be pool or flat")
    if regressor not in {None, *convert.JCA_REGRESSOR_MODES}:
        raise usage(f"--regressor takes {' or '.join(convert.JCA_REGRESSOR_MODES)}")
    if dimension not in {None, *convert.DIMENSIONS}:
        raise usage("--dimension must be valence or arousal")
    given = {"features": features, "regressor": regressor, "dimension": dimension, "heads": heads}
    options = {k: v for k, v in given.items() if v is not None}
    from avemo import hub

    try:
        manifest = hub.load_manifest()
        if name is not None:
            hub.get(name, manifest)
        for src in sources:  # an unknown name is a usage error (status 2), before any work
            path = Path(src).expanduser()
            if not path.exists() and "/" not in src and not path.suffix:
                hub.get(src, manifest)
    except AvemoError as error:
        raise usage(str(error)) from None
    try:
        if pipeline:
            paths = [
                convert.import_pipeline(
                    sources,
                    output,
                    fmt=fmt,
                    seq_len=seq_len,
                    member=member,
                    overwrite=overwrite,
                    **options,
                )
            ]
            roles = ["pipeline"]
        else:
            paths = convert.import_weights(
                sources[0], fmt, output, name=name, member=member, overwrite=overwrite, **options
            )
            roles = [_role(p) for p in paths]
    except AvemoError as error:
        raise _weights_failed(error) from None
    for role, path in zip(roles, paths, strict=True):
        typer.echo(f"{role}: {path}")


def _role(path: Path) -> str:
    """The pipeline role of an imported checkpoint, from its file's header."""
    from avemo import models

    component = models.read_header(path)["component"]
    return {"visual_backbone": "visual", "audio_backbone": "audio"}.get(component, component)


# --- avemo evaluate: scores against ground truth (avemo.evaluate) ------------------------------


@app.command()
def evaluate(
    predictions: Annotated[
        Path,
        typer.Argument(
            exists=True,
            help="Prediction file or folder: avemo CSVs, challenge files, frame/valence/arousal "
            "CSVs.",
        ),
    ],
    labels: Annotated[
        Path,
        typer.Argument(exists=True, help="Label file or folder (Aff-Wild2 <video>.txt, ...)."),
    ],
    pooling: Annotated[
        Literal["concat", "video"],
        typer.Option(help="concat: all frames as one series (the challenge's); video: mean, std."),
    ] = "concat",
    missing: Annotated[
        Literal["drop", "zero", "ffill"],
        typer.Option(help="Labelled frames without prediction: drop, score as 0, or ffill."),
    ] = "drop",
    smooth: Annotated[
        bool,
        typer.Option("--smooth", help="Box-filter predictions first (valence 20, arousal 50)."),
    ] = False,
    face_id: Annotated[
        int | None, typer.Option("--face-id", help="Face of avemo CSVs with several faces.")
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option(
            "--columns",
            metavar="V,A",
            help="Value columns of prediction CSVs (default valence,arousal).",
        ),
    ] = None,
    bootstrap: Annotated[
        int, typer.Option("--bootstrap", min=0, help="Resamples of videos for 95% intervals.")
    ] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = 0,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the summary numbers as JSON.")
    ] = None,
    per_video: Annotated[
        Path | None, typer.Option("--per-video", help="Write per-video numbers as CSV.")
    ] = None,
    plots: Annotated[
        Path | None, typer.Option("--plots", help="Write traces per video and a VA scatter (PNG).")
    ] = None,
) -> None:
    """Score predictions against labels: CCC, PCC, RMSE, SAGR (ABAW conventions)."""
    from avemo.evaluate import evaluate as run
    from avemo.files import atomic_path

    names = None
    if columns is not None:
        names = tuple(name.strip() for name in columns.split(","))
        if len(names) != 2 or not all(names):
            raise typer.BadParameter(
                "give two column names: VALENCE,AROUSAL", param_hint="--columns"
            )
    try:
        result = run(
            predictions,
            labels,
            pooling=pooling,
            missing=missing,
            smooth=smooth,
            face_id=face_id,
            columns=names,
            bootstrap=bootstrap,
            seed=seed,
            per_video=per_video,
            plots=plots,
        )
        if json_path is not None:
            with atomic_path(json_path) as tmp:
                tmp.write_text(result.to_json() + "\n")
    except AvemoError as error:
        if os.environ.get("AVEMO_DEBUG"):
            raise
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(result.table())


# --- avemo faces: detect, track and align faces (avemo.faces, avemo.tracking, avemo.facetrack) ---


def _crop_size(value: int) -> int:
    if value not in CROP_SIZES:
        raise typer.BadParameter(f"must be one of {', '.join(map(str, CROP_SIZES))}")
    return value


def crops_folder(job, face_id: int) -> Path:
    """Where a job's aligned crops go: ``OUT/<rel>/<stem>/`` (``<stem>_face<id>/`` after the
    dominant face)."""
    name = job.output_stem.name + (f"_face{face_id}" if face_id else "")
    return job.output_stem.with_name(name)


@app.command()
def faces(
    inputs: Inputs,
    output: OutputDir,
    detector: Detector = "centerface",
    detector_model: DetectorModel = None,
    detect_size: DetectSize = WORKING_SIZE,
    threshold: Threshold = None,
    detect_every: DetectEvery = 1,
    max_faces: MaxFaces = 1,
    save_crops: Annotated[
        bool,
        typer.Option(
            "--save-crops", help="Also write aligned face crops as OUT/<rel>/<stem>/%05d.jpg."
        ),
    ] = False,
    crop_size: Annotated[
        int, typer.Option("--crop-size", callback=_crop_size, help="Crop side, px: 112 or 224.")
    ] = 112,
    device: Device = "auto",
    overwrite: Overwrite = False,
    progress: Progress = None,
) -> None:
    """Detect and track faces: OUT/<rel>/<stem>.faces.csv per video, one row per frame and face."""
    from avemo.batch import find_jobs, run_batch
    from avemo.face.detect import build_detector
    from avemo.face.scan import detect_tracks, faces_table
    from avemo.face.scan import save_crops as write_crops
    from avemo.writers import get_writer

    try:
        face_detector = build_detector(
            detector, detector_model, size=detect_size, threshold=threshold, device=device
        )
    except AvemoError as error:  # a bad option value: usage error
        if os.environ.get("AVEMO_DEBUG"):
            raise
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    jobs = find_jobs(inputs, output)
    if not jobs:
        typer.echo(f"error: no video files in {', '.join(map(str, inputs))}", err=True)
        raise typer.Exit(2)
    show = sys.stderr.isatty() if progress is None else progress
    writer = get_writer("csv")

    def outputs(job) -> list[Path]:
        return [job.output(".faces.csv")] + ([crops_folder(job, 0)] if save_crops else [])

    def process(job) -> None:
        scan = detect_tracks(job.source, face_detector, detect_every=detect_every, progress=show)
        if save_crops:
            for track in scan.tracks(max_faces):
                write_crops(job.source, track, crops_folder(job, track.face_id), crop_size)
        writer.write(faces_table(scan, max_faces), job.output(".faces.csv"))

    result = run_batch(jobs, process, outputs=outputs, overwrite=overwrite)
    typer.echo(result.summary("videos"), err=True)
    raise typer.Exit(result.exit_code)


# --- avemo extract / train / bundle: fusion-head training on cached features (issue 6) ---------


def _failed(error: AvemoError) -> typer.Exit:
    """Report a failed command on one line; exit status 1."""
    if os.environ.get("AVEMO_DEBUG"):
        raise error
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(1)


@app.command()
def extract(
    inputs: Annotated[
        list[Path], typer.Argument(help="Video files and/or folders: frame times and audio.")
    ],
    crops: Annotated[
        Path,
        typer.Option(
            "--crops",
            help="Face crops: Aff-Wild2 cropped_aligned/ or `avemo faces --save-crops` output.",
        ),
    ],
    output: OutputDir,
    visual: Annotated[
        str | None, typer.Option("--visual", help="Visual backbone checkpoint (file or name).")
    ] = None,
    audio: Annotated[
        str | None, typer.Option("--audio", help="Audio backbone checkpoint (file or name).")
    ] = None,
    pipeline: Annotated[
        str | None,
        typer.Option("--pipeline", help="Take both backbones from a pipeline checkpoint."),
    ] = None,
    labels: Annotated[
        list[Path] | None,
        typer.Option("--labels", help="Label folder(s): extract only the labelled videos."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Clips per pass.")] = 8,
    device: Device = "auto",
    bf16: Annotated[
        bool, typer.Option("--bf16", help="bfloat16 autocast (faster on recent CPUs and GPUs).")
    ] = False,
    overwrite: Overwrite = False,
) -> None:
    """Cache backbone features of every clip (one <video>.npz each) for `avemo train`."""
    from avemo.extract import extract as run

    try:
        result = run(
            inputs,
            crops,
            output,
            visual=visual,
            audio=audio,
            pipeline=pipeline,
            labels=labels,
            batch_size=batch_size,
            device=device,
            bf16=bf16,
            overwrite=overwrite,
        )
    except AvemoError as error:
        raise _failed(error) from None
    typer.echo(result.summary("videos"), err=True)
    raise typer.Exit(result.exit_code)


@app.command()
def train(
    features: Annotated[Path, typer.Option("--features", help="Feature cache (avemo extract).")],
    labels: Annotated[
        list[Path], typer.Option("--labels", help="Label folder(s) of <video>.txt files.")
    ],
    head: Annotated[
        str,
        typer.Option(
            "--head", help="jca, jmt, jca_tbiom, concat, cross_attention or leader_follower."
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint (.safetensors).")],
    recipe: Annotated[
        str,
        typer.Option("--recipe", help="jca-cvpr, jca-journal, jmt-paper or jmt-code (SPEC 7)."),
    ] = "jca-journal",
    val: Annotated[
        Path | None,
        typer.Option("--val", help="Validation label folder, or a file listing video names."),
    ] = None,
    folds: Annotated[
        int | None, typer.Option("--folds", min=2, help="K-fold cross-validation.")
    ] = None,
    fold: Annotated[
        int | None, typer.Option("--fold", min=0, help="Train this fold only (0-based).")
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate.")] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Sequences per batch.")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Maximum epochs.")] = None,
    patience: Annotated[
        int | None,
        typer.Option("--patience", min=1, help="Stop after N epochs without a better val CCC."),
    ] = None,
    seq_len: Annotated[
        int | None, typer.Option("--seq-len", min=1, help="Clips per sequence (L).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of init, shuffle, dropout.")] = 0,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Data loader workers.")] = 0,
    pipeline: Annotated[
        Path | None,
        typer.Option("--pipeline", help="Also bundle backbones + head here for annotate."),
    ] = None,
    device: Device = "auto",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Train again even if OUTPUT is finished.")
    ] = False,
) -> None:
    """Train a fusion head on cached features; saves the best epoch and a CSV log per epoch.

    An interrupted run resumes where it stopped when given the same command again. With --folds K
    and no --fold every fold is trained (OUTPUT.fold<i>.safetensors) and OUTPUT.folds.csv holds
    each fold's validation CCC and their mean.
    """
    from avemo import train as training

    options = dict(
        recipe_name=recipe,
        lr=lr,
        batch_size=batch_size,
        epochs=epochs,
        patience=patience,
        seq_len=seq_len,
        seed=seed,
        device=device,
        num_workers=workers,
        overwrite=overwrite,
    )
    try:
        if folds is not None and fold is None:
            if val is not None or pipeline is not None:
                raise AvemoError("--folds without --fold trains every fold: no --val, --pipeline")
            results = training.cross_validate(
                features, labels, head, output, folds=folds, **options
            )
            typer.echo(training.fold_summary(results).to_string(index=False, float_format="%.4f"))
            return
        result = training.train(
            features, labels, head, output, validation=val, folds=folds, fold=fold, **options
        )
        scores = result.validation
        typer.echo(
            f"{result.output}: best epoch {result.best_epoch} of {result.epochs_run}, validation "
            f"CCC valence {scores['ccc_valence']:.4f} arousal {scores['ccc_arousal']:.4f} "
            f"mean {scores['ccc_mean']:.4f} (log: {result.log})"
        )
        if pipeline is not None:
            typer.echo(f"pipeline: {training.bundle(result.output, features, pipeline)}")
    except AvemoError as error:
        raise _failed(error) from None


@app.command()
def bundle(
    head: Annotated[Path, typer.Argument(help="Fusion head checkpoint from `avemo train`.")],
    features: Annotated[
        Path, typer.Option("--features", help="The feature cache the head was trained on.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Pipeline checkpoint to write.")],
) -> None:
    """Bundle the cache's backbones and a trained head into one checkpoint for annotate."""
    from avemo.train import bundle as run

    try:
        typer.echo(str(run(head, features, output)))
    except AvemoError as error:
        raise _failed(error) from None
