"""``avemo faces``: detect, track and align the faces of every video (no emotion model).

Per video: ``OUT/<rel>/<stem>.faces.csv``, one row per decoded frame and kept face (box,
confidence, 5 landmarks), and with ``save_crops`` the aligned crops of each face in the Aff-Wild2
layout (``OUT/<rel>/<stem>/%05d.jpg``; faces after the dominant one in ``<stem>_face<id>/``),
which ``avemo extract --crops`` reads back. The stages are :mod:`avemo.face`.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from avemo.errors import AvemoError
from avemo.face.detect import cached_detector
from avemo.face.scan import DETECT_EVERY_FACES, crops_folder

log = logging.getLogger("avemo")

TABLE_SUFFIX = ".faces.csv"
DEFAULT_CROP_SIZE = 112  # px, the R(2+1)D path's crops (224 for I3D)


def faces(
    path: str | os.PathLike,
    *,
    detector: str = "centerface",
    detector_model: str | os.PathLike | None = None,
    detect_size: int | None = None,
    threshold: float | None = None,
    detect_every: int = DETECT_EVERY_FACES,
    max_faces: int = 1,
    device: str = "auto",
    progress: bool = False,
    backend: str = "auto",
) -> pd.DataFrame:
    """The faces table of one video: one row per decoded frame and kept face track."""
    from avemo.face.detect import build_detector
    from avemo.face.scan import detect_tracks, faces_table

    found = build_detector(
        detector,
        detector_model,
        size=detect_size,
        threshold=threshold,
        device=device,
        backend=backend,
    )
    scan = detect_tracks(path, found, detect_every=detect_every, progress=progress)
    return faces_table(scan, max_faces)


def faces_job(
    job,
    *,
    detector: str,
    detector_model,
    detect_size: int | None,
    threshold: float | None,
    device: str,
    detect_every: int,
    max_faces: int,
    save_crops: bool,
    crop_size: int,
    progress: bool,
    overwrite: bool = False,
    backend: str = "auto",
) -> dict:
    """One video of a batch, as a picklable per-job function (what a Ray worker runs): its
    faces table and crops; returns this process's detector loads so far."""
    from avemo.face.scan import detect_tracks, faces_table
    from avemo.face.scan import save_crops as write_crops
    from avemo.writers import get_writer

    found = cached_detector(detector, detector_model, detect_size, threshold, device, backend)
    scan = detect_tracks(job.source, found, detect_every=detect_every, progress=progress)
    if save_crops:
        for track in scan.tracks(max_faces):
            folder = crops_folder(job.output_stem, track.face_id)
            if folder.exists() and not overwrite:  # skipped like any existing output
                log.info("%s exists: its crops are kept (--overwrite replaces them)", folder)
                continue
            write_crops(job.source, track, folder, crop_size)
    get_writer("csv").write(faces_table(scan, max_faces), job.output(TABLE_SUFFIX))
    return {"detector_loads": cached_detector.cache_info().misses}


def faces_videos(
    inputs: Iterable[str | os.PathLike],
    output: str | os.PathLike,
    *,
    detector: str = "centerface",
    detector_model: str | os.PathLike | None = None,
    detect_size: int | None = None,
    threshold: float | None = None,
    detect_every: int = DETECT_EVERY_FACES,
    max_faces: int = 1,
    save_crops: bool = False,
    crop_size: int = DEFAULT_CROP_SIZE,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = False,
    stream=None,
    ray: str | None = None,
    gpus_per_video: float | None = None,
    cpus_per_video: float | None = None,
    retries: int | None = None,
    backend: str = "auto",
):
    """The batch behind ``avemo faces``: every video under ``inputs`` into ``output``.

    The detector is built (and its options checked) once, before any file; per-file failures
    are reported on one line each and never stop the batch. ``ray``: run the videos on a Ray
    cluster (:mod:`avemo.cluster`; ``gpus_per_video`` ... ``retries`` are its options). Returns
    the :class:`avemo.batch.BatchResult`.
    """
    from avemo.backends import parse_backend
    from avemo.batch import plan, run_batch
    from avemo.face.align import CROP_SIZES

    backend = parse_backend(backend)  # a usage error, before anything else
    inputs = list(inputs)
    if crop_size not in CROP_SIZES:
        raise AvemoError(f"--crop-size must be one of {', '.join(map(str, CROP_SIZES))}")
    from avemo import cluster  # light: it imports Ray only for an address

    on_ray = cluster.executor(
        ray,
        device=device,
        gpus_per_video=gpus_per_video,
        cpus_per_video=cpus_per_video,
        retries=retries,
        progress=progress,
    )
    # options checked here, before any file (on Ray with the CPU: the driver may have no GPU)
    cached_detector(
        detector, detector_model, detect_size, threshold, "cpu" if on_ray else device, backend
    )
    jobs = plan(inputs, output)  # the output folder is made only when the options are good
    process = functools.partial(
        faces_job,
        detector=detector,
        detector_model=detector_model,
        detect_size=detect_size,
        threshold=threshold,
        device=device,
        backend=backend,
        detect_every=detect_every,
        max_faces=max_faces,
        save_crops=save_crops,
        crop_size=crop_size,
        progress=progress and on_ray is None,
        overwrite=overwrite,
    )

    def outputs(job) -> list[Path]:
        table = [job.output(TABLE_SUFFIX)]
        return table + ([crops_folder(job.output_stem, 0)] if save_crops else [])

    return run_batch(
        jobs, process, outputs=outputs, overwrite=overwrite, stream=stream, executor=on_ray
    )
