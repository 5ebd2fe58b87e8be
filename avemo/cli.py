"""Command-line interface: parses arguments, calls one library function per command, reports.

Every command runs through :func:`_reported`, the one error wrapper: an :class:`AvemoError` that
escapes the library function is one ``error:`` line and exit status ``error.status`` (2 for a
usage or configuration error, 1 for a failed input; see :mod:`avemo.errors`), and a batch
command exits with its result's status (0 all done, 1 some file failed). Option defaults are the
library's: an option left unset is passed as None and the library function applies its default.
``AVEMO_DEBUG=1`` shows tracebacks instead.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Literal

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


def _reported(command):
    """The one error wrapper of every command (see the module docstring)."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except AvemoError as error:
            if os.environ.get("AVEMO_DEBUG"):
                raise
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(error.status) from None

    return run


def _finish(result) -> None:
    """Report a batch result (summary line on stderr) and exit with its status."""
    typer.echo(result.summary("videos"), err=True)
    raise typer.Exit(result.exit_code)


def _given(**options) -> dict:
    """The options the user set: an unset option (None) is left out, so that the library
    function's own default applies (defaults live once, in the library)."""
    return {key: value for key, value in options.items() if value is not None}


def _progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


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
Device = Annotated[
    str | None,
    typer.Option("--device", help="auto (default: CUDA when there), cpu, cuda or cuda:N."),
]
Backend = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help="Runtime of the networks: auto (default: the fastest installed, README Speed), "
        "torch, onnxruntime or openvino (the openvino extra).",
    ),
]
Detector = Annotated[
    str | None, typer.Option("--detector", help="centerface (bundled, default) or scrfd.")
]
DetectorModel = Annotated[
    Path | None,
    typer.Option(
        "--detector-model", help="Model file for --detector scrfd (an insightface .onnx)."
    ),
]
MaxFaces = Annotated[
    int | None,
    typer.Option(
        "--max-faces", min=1, help="Keep the N dominant face tracks (by size and duration; 1)."
    ),
]

DetectSize = Annotated[
    int | None,
    typer.Option(
        "--detect-size", min=32, help="Longer side (px) of the image the detector sees (320)."
    ),
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
    int | None,
    typer.Option(
        "--detect-every",
        min=1,
        help="Run the detector on every K-th frame only, faces interpolated between (default: "
        "2; 1 for `avemo faces`).",
    ),
]
BatchSize = Annotated[
    int | None, typer.Option("--batch-size", min=1, help="Clips per forward pass (default 8).")
]
Progress = Annotated[
    bool | None,
    typer.Option(
        "--progress/--no-progress", help="Progress bars (default: when stderr is a terminal)."
    ),
]
# Ray (avemo.cluster; the `ray` extra): one task per video on a cluster, same outputs
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="ADDRESS",
        help="Run the videos on a Ray cluster: auto (RAY_ADDRESS, else a local Ray), "
        "HOST:PORT or ray://HOST:PORT. OUT must be on a filesystem every node mounts.",
        rich_help_panel="Ray",
    ),
]
GpusPerVideo = Annotated[
    float | None,
    typer.Option(
        "--gpus-per-video",
        min=0.0,
        help="GPUs per video task (0.25: four share a GPU); default: 1 if --device is cuda, "
        "or auto on a cluster with GPUs, else 0.",
        rich_help_panel="Ray",
    ),
]
CpusPerVideo = Annotated[
    float | None,
    typer.Option(
        "--cpus-per-video", min=0.0, help="CPUs per video task (default 1).",
        rich_help_panel="Ray",
    ),
]
Retries = Annotated[
    int | None,
    typer.Option(
        "--retries",
        min=0,
        help="Run a video again this many times when its worker or node dies (default 3).",
        rich_help_panel="Ray",
    ),
]


@app.command()
@_reported
def sample() -> None:
    """Print the path of the sample clip installed with avemo (for trying it out)."""
    from avemo.files import sample_video

    typer.echo(str(sample_video()))


@app.command()
@_reported
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
            "default: 1 for the expression model, 4 for pipelines.",
        ),
    ] = None,
    smooth: Annotated[
        bool, typer.Option("--smooth/--no-smooth", help="Reference box filter (SPEC 6).")
    ] = True,
    fmt: Annotated[
        str | None, typer.Option("--format", "-f", help="csv (default), tsv or abaw (challenge).")
    ] = None,
    device: Device = None,
    backend: Backend = None,
    batch_size: BatchSize = None,
    bf16: Annotated[
        bool | None,
        typer.Option(
            "--bf16/--no-bf16",
            help="bfloat16 for every network (--no-bf16: float32 everywhere); default: on where "
            "the hardware has native bf16 for pipelines' networks (about 2x faster) and the "
            "face detector on OpenVINO, off for the expression model.",
        ),
    ] = None,
    detector: Detector = None,
    detector_model: DetectorModel = None,
    detect_size: DetectSize = None,
    detect_every: DetectEvery = None,
    max_faces: MaxFaces = None,
    overlay: Annotated[
        bool,
        typer.Option(
            "--overlay", help="Also write OUT/<rel>/<stem>.overlay.mp4 (see `avemo render`)."
        ),
    ] = False,
    overwrite: Overwrite = False,
    progress: Progress = None,
    ray: RayAddress = None,
    gpus_per_video: GpusPerVideo = None,
    cpus_per_video: CpusPerVideo = None,
    retries: Retries = None,
) -> None:
    """Write per-frame valence and arousal for every video: OUT/<rel>/<stem>.csv (+ .json)."""
    from avemo.annotate import annotate_videos

    _finish(
        annotate_videos(
            inputs,
            output,
            **_given(
                model=model,
                fmt=fmt,
                overlay=overlay,
                overwrite=overwrite,
                stride=stride,
                smooth=smooth,
                device=device,
                backend=backend,
                batch_size=batch_size,
                bf16=bf16,
                detector=detector,
                detector_model=detector_model,
                detect_size=detect_size,
                detect_every=detect_every,
                max_faces=max_faces,
                progress=_progress(progress),
                ray=ray,
                gpus_per_video=gpus_per_video,
                cpus_per_video=cpus_per_video,
                retries=retries,
            ),
        )
    )


def main() -> None:
    """Entry point of the ``avemo`` console script."""
    app()


# --- avemo weights: named weights, the download cache and verification (avemo.hub) ------------

weights_app = typer.Typer(
    help="List, download, verify and import weights (cache: $AVEMO_HOME, else ~/.cache/avemo).",
    no_args_is_help=True,
)
app.add_typer(weights_app, name="weights")


def _size(size: int | None) -> str:
    if size is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@weights_app.command("list")
@_reported
def weights_list() -> None:
    """List the known weights, what they are, and whether they are here."""
    from avemo import hub

    rows = [("NAME", "COMPONENT", "IMPORT", "SIZE", "SHA256", "STATUS")]
    for row in hub.table():
        rows.append(
            (row["name"], row["component"], row["import"] or "-", _size(row["size"]),
             row["sha256"], row["status"])
        )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        typer.echo("  ".join(cells).rstrip())


@weights_app.command("info")
@_reported
def weights_info(name: Annotated[str, typer.Argument(help="A name from `avemo weights list`.")]):
    """Show everything the manifest and the cache know about NAME (weights or a pipeline)."""
    from avemo import hub

    info = hub.info(name)
    for key, value in info.items():
        if isinstance(value, list | tuple):
            value = ", ".join(map(str, value)) or "-"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        typer.echo(f"{key + ':':15} {'-' if value is None else value}")


@weights_app.command("pull")
@_reported
def weights_pull(
    names: Annotated[
        list[str], typer.Argument(help="Weights or pipeline names from `avemo weights list`.")
    ],
    trust: Annotated[
        bool,
        typer.Option(
            "--trust", help="Download entries without a published sha256 and record their hash."
        ),
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0.1, help="Seconds to wait for the server (30)."),
    ] = None,
) -> None:
    """Download weights into the cache, resuming partial downloads, verifying the sha256; a
    pipeline's components are pulled, then imported and assembled once into the cache."""
    from avemo import convert

    done = convert.pull_command(names, trust=trust, **_given(timeout=timeout))
    for name, path in done.items():
        if path is not None:
            typer.echo(f"{name}: {path}")
    raise typer.Exit(1 if None in done.values() else 0)


@weights_app.command("verify")
@_reported
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
@_reported
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

    written = convert.import_command(
        sources,
        output,
        fmt=fmt,
        pipeline=pipeline,
        name=name,
        member=member,
        seq_len=seq_len,
        overwrite=overwrite,
        features=features,
        regressor=regressor,
        dimension=dimension,
        heads=heads,
    )
    for role, path in written:
        typer.echo(f"{role}: {path}")


# --- avemo evaluate: scores against ground truth (avemo.evaluate) ------------------------------


@app.command()
@_reported
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
        Literal["concat", "video"] | None,
        typer.Option(
            help="concat (default): all frames as one series (the challenge's); video: mean, std."
        ),
    ] = None,
    missing: Annotated[
        Literal["drop", "zero", "ffill"] | None,
        typer.Option(
            help="Labelled frames without prediction: drop (default), score as 0, or ffill."
        ),
    ] = None,
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
        int | None,
        typer.Option("--bootstrap", min=0, help="Resamples of videos for 95% intervals (0)."),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the bootstrap (0).")] = None,
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

    names = None
    if columns is not None:
        names = tuple(name.strip() for name in columns.split(","))
        if len(names) != 2 or not all(names):
            raise typer.BadParameter(
                "give two column names: VALENCE,AROUSAL", param_hint="--columns"
            )
    result = run(
        predictions,
        labels,
        **_given(
            pooling=pooling,
            missing=missing,
            smooth=smooth,
            face_id=face_id,
            columns=names,
            bootstrap=bootstrap,
            seed=seed,
            per_video=per_video,
            plots=plots,
            json_path=json_path,
        ),
    )
    typer.echo(result.table())


# --- avemo faces: detect, track and align faces (avemo.faces, avemo.face) --------------------


@app.command()
@_reported
def faces(
    inputs: Inputs,
    output: OutputDir,
    detector: Detector = None,
    detector_model: DetectorModel = None,
    detect_size: DetectSize = None,
    threshold: Threshold = None,
    detect_every: DetectEvery = None,
    max_faces: MaxFaces = None,
    save_crops: Annotated[
        bool,
        typer.Option(
            "--save-crops", help="Also write aligned face crops as OUT/<rel>/<stem>/%05d.jpg."
        ),
    ] = False,
    crop_size: Annotated[
        int | None, typer.Option("--crop-size", help="Crop side, px: 112 (default) or 224.")
    ] = None,
    device: Device = None,
    backend: Backend = None,
    overwrite: Overwrite = False,
    progress: Progress = None,
    ray: RayAddress = None,
    gpus_per_video: GpusPerVideo = None,
    cpus_per_video: CpusPerVideo = None,
    retries: Retries = None,
) -> None:
    """Detect and track faces: OUT/<rel>/<stem>.faces.csv per video, one row per frame and face."""
    from avemo.faces import faces_videos

    _finish(
        faces_videos(
            inputs,
            output,
            **_given(
                detect_every=detect_every,
                crop_size=crop_size,
                detector=detector,
                detector_model=detector_model,
                detect_size=detect_size,
                threshold=threshold,
                max_faces=max_faces,
                save_crops=save_crops,
                device=device,
                backend=backend,
                overwrite=overwrite,
                progress=_progress(progress),
                ray=ray,
                gpus_per_video=gpus_per_video,
                cpus_per_video=cpus_per_video,
                retries=retries,
            ),
        )
    )


# --- avemo extract / train / bundle: fusion-head training on cached features (issue 6) ---------


@app.command()
@_reported
def extract(
    inputs: Annotated[
        list[Path], typer.Argument(help="Video files and/or folders: frame times and audio.")
    ],
    output: OutputDir,
    crops: Annotated[
        Path | None,
        typer.Option(
            "--crops",
            help="Face crops: Aff-Wild2 cropped_aligned/ or `avemo faces --save-crops` output "
            "(default: find the faces in the videos, as annotate does).",
        ),
    ] = None,
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
    batch_size: BatchSize = None,
    device: Device = None,
    backend: Backend = None,
    bf16: Annotated[
        bool, typer.Option("--bf16", help="bfloat16 autocast (faster on recent CPUs and GPUs).")
    ] = False,
    detector: Detector = None,
    detector_model: DetectorModel = None,
    detect_size: DetectSize = None,
    detect_every: DetectEvery = None,
    threshold: Threshold = None,
    overwrite: Overwrite = False,
    progress: Progress = None,
    ray: RayAddress = None,
    gpus_per_video: GpusPerVideo = None,
    cpus_per_video: CpusPerVideo = None,
    retries: Retries = None,
) -> None:
    """Cache backbone features of every clip (one <video>.npz each) for `avemo train`."""
    from avemo.extract import extract as run

    _finish(
        run(
            inputs,
            crops,
            output,
            **_given(
                batch_size=batch_size,
                detect_every=detect_every,
                visual=visual,
                audio=audio,
                pipeline=pipeline,
                labels=labels,
                device=device,
                backend=backend,
                bf16=bf16,
                detector=detector,
                detector_model=detector_model,
                detect_size=detect_size,
                threshold=threshold,
                overwrite=overwrite,
                progress=_progress(progress),
                ray=ray,
                gpus_per_video=gpus_per_video,
                cpus_per_video=cpus_per_video,
                retries=retries,
            ),
        )
    )


@app.command()
@_reported
def train(
    features: Annotated[Path, typer.Option("--features", help="Feature cache (avemo extract).")],
    labels: Annotated[
        list[Path], typer.Option("--labels", help="Label folder(s) of <video>.txt files.")
    ],
    head: Annotated[
        str,
        typer.Option(
            "--head",
            help="A registered fusion head, e.g. jca, jmt or jca_tbiom (README, Models; "
            "an unknown name lists them all).",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint (.safetensors).")],
    recipe: Annotated[
        str | None,
        typer.Option(
            "--recipe",
            help="jca-cvpr, jca-journal, jmt-paper or jmt-code (SPEC 7); default jca-journal.",
        ),
    ] = None,
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
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of init, shuffle, dropout (0).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=0, help="Data loader workers (0).")
    ] = None,
    pipeline: Annotated[
        Path | None,
        typer.Option("--pipeline", help="Also bundle backbones + head here for annotate."),
    ] = None,
    device: Device = None,
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

    options = _given(
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
    results, bundled = training.run(
        features, labels, head, output, validation=val, folds=folds, fold=fold,
        pipeline=pipeline, **options,
    )  # fmt: skip
    if len(results) > 1:
        typer.echo(training.fold_summary(results).to_string(index=False, float_format="%.4f"))
    else:
        result = results[0]
        scores = result.validation
        typer.echo(
            f"{result.output}: best epoch {result.best_epoch} of {result.epochs_run}, validation "
            f"CCC valence {scores['ccc_valence']:.4f} arousal {scores['ccc_arousal']:.4f} "
            f"mean {scores['ccc_mean']:.4f} (log: {result.log})"
        )
    if bundled is not None:
        typer.echo(f"pipeline: {bundled}")


@app.command()
@_reported
def bundle(
    head: Annotated[Path, typer.Argument(help="Fusion head checkpoint from `avemo train`.")],
    features: Annotated[
        Path, typer.Option("--features", help="The feature cache the head was trained on.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Pipeline checkpoint to write.")],
) -> None:
    """Bundle the cache's backbones and a trained head into one checkpoint for annotate."""
    from avemo.train import bundle as run

    typer.echo(str(run(head, features, output)))


# --- looking at results: overlay videos, plots, summaries (avemo.render, plots, summary) -------


@app.command()
@_reported
def render(
    table: Annotated[Path, typer.Argument(help="An avemo annotate CSV (or TSV).")],
    video: Annotated[Path, typer.Argument(help="The video it annotates.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The overlay video (.mp4).")],
) -> None:
    """Draw an annotation onto its video: faces, valence/arousal bars, trace, circumplex."""
    from avemo.render import render as render_overlay

    typer.echo(str(render_overlay(table, video, output)))


@app.command()
@_reported
def plot(
    inputs: Annotated[
        list[Path], typer.Argument(help="avemo annotate CSVs and/or folders of them.")
    ],
    output: OutputDir,
) -> None:
    """Per annotation a PNG: valence/arousal over time per face and their density."""
    from avemo.plots import plot_annotations

    written, failed = plot_annotations(inputs, output)
    for _, message in failed:
        typer.echo(f"error: {message}", err=True)
    typer.echo(f"{len(written)} plots written to {output}, {len(failed)} failed", err=True)
    raise typer.Exit(1 if failed or not written else 0)


@app.command()
@_reported
def summarize(
    inputs: Annotated[
        list[Path], typer.Argument(help="avemo annotate output folders and/or .json records.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The summary table (.csv).")],
) -> None:
    """One table of the per-face summaries of every annotation: one row per video and face."""
    from avemo.summary import collect

    table = collect(inputs, output)
    typer.echo(f"{len(table)} rows ({table['video'].nunique()} videos) written to {output}")
