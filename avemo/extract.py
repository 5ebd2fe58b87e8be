"""``avemo extract``: cache the frozen backbones' features of every clip for training.

The features come from the feature engine (:mod:`avemo.features`), the same code that feeds the
fusion head in ``avemo annotate``, and are written in the cache format of :mod:`avemo.cache`
(one ``<video>.npz`` per video and a ``cache.json``). The face crops are either read from a
crops folder (Aff-Wild2's ``cropped_aligned/<video>/%05d.jpg``, or ``avemo faces --save-crops``
output) or, without ``crops``, found in the video exactly as ``avemo annotate`` finds them (the
dominant face track, aligned in memory).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avemo.cache import (
    CACHE_FORMAT,
    CACHE_JSON,
    FEATURE_SUFFIX,
    Features,
    read_cache_info,
    read_features,
    write_features,
)
from avemo.errors import AvemoError
from avemo.face.detect import cached_detector
from avemo.face.scan import DETECT_EVERY_ANNOTATE, OTHER_FACE
from avemo.features import DEFAULT_BATCH_SIZE, Backbones, ClipStream, FeatureEngine, load_backbones
from avemo.files import atomic_path
from avemo.labels import SIDES, pair_base

log = logging.getLogger("avemo")

CROP_PATTERN = re.compile(r"^(\d+)\.jpe?g$", re.IGNORECASE)  # %05d.jpg, 1-based frame number


@dataclass(frozen=True)
class Source:
    """One video to extract: its cache name, media file (timestamps, audio) and crops folder."""

    name: str  # cache name: the crops folder relative to the crops root (posix), or the video's
    video: Path
    crops: Path | None  # None: the faces are found in the video itself, as annotate finds them


def crop_folders(crops: str | os.PathLike) -> dict[str, Path]:
    """Name (relative posix path) -> folder, for every folder under ``crops`` holding crops."""
    crops = Path(crops)
    if not crops.is_dir():
        raise AvemoError("no such crops folder", crops)
    folders = {}
    for folder, _, files in os.walk(crops):  # names only: no stat per crop (millions of them)
        if any(CROP_PATTERN.match(name) for name in files):
            path = Path(folder)
            folders[path.relative_to(crops).as_posix()] = path
    return dict(sorted(folders.items()))


def find_sources(
    videos: Sequence[str | os.PathLike],
    crops: str | os.PathLike,
    names: Sequence[str] | None = None,
) -> list[Source | tuple[str, str]]:
    """Pair every crops folder (or every name in ``names``) with its video file.

    Works for both layouts: Aff-Wild2 (``cropped_aligned/<video>/``, videos by name, where
    ``<base>_left`` and ``<base>_right`` share the video ``<base>``) and ``avemo faces
    --save-crops`` output (``OUT/<rel>/<stem>/`` for the video ``<rel>/<stem>.<ext>``). A name
    that cannot be paired is returned as ``(name, problem)`` so the batch can report it.
    """
    from avemo.batch import find_jobs

    folders = crop_folders(crops)
    by_base: dict[str, list[str]] = {}
    for folder in folders:
        by_base.setdefault(Path(folder).name, []).append(folder)
    jobs = find_jobs(videos, ".")
    by_relative = {job.relative.with_suffix("").as_posix(): job.source for job in jobs}
    by_stem: dict[str, list[Path]] = {}
    for job in jobs:
        by_stem.setdefault(job.source.stem, []).append(job.source)

    out: list[Source | tuple[str, str]] = []
    for name in sorted(names) if names is not None else sorted(folders):
        folder = name if name in folders else None
        if folder is None:
            matches = by_base.get(Path(name).name, [])
            if len(matches) != 1:
                problem = "no face crops folder" if not matches else "several crops folders"
                out.append((name, f"{problem} named {Path(name).name!r} in {crops}"))
                continue
            folder = matches[0]
        stem = Path(folder).name
        video = by_relative.get(folder)
        # <stem>_face<k>: another face of the video <stem> (avemo faces --max-faces)
        other_face = OTHER_FACE.sub("", stem)
        video = video or by_relative.get(Path(folder).with_name(other_face).as_posix())
        for candidate in (stem, pair_base(stem), other_face):
            if video is None and len(by_stem.get(candidate, [])) == 1:
                video = by_stem[candidate][0]
        if video is None:
            found = len(by_stem.get(stem, []) + by_stem.get(pair_base(stem), []))
            problem = "several video files" if found else "no video file"
            out.append((folder, f"{problem} for {stem!r} (looked for {pair_base(stem)}.* too)"))
            continue
        out.append(Source(folder, Path(video), folders[folder]))
    return out


def crop_frames(folder: Path) -> dict[int, Path]:
    """0-based frame index -> crop file, from the 1-based ``%05d.jpg`` names of a crops folder."""
    frames = {}
    for path in folder.iterdir():
        match = CROP_PATTERN.match(path.name)
        if match:
            number = int(match.group(1))
            if number < 1:
                raise AvemoError(f"crop {path.name}: frame numbers start at 1", folder)
            frames[number - 1] = path
    return frames


def video_sources(videos: Sequence[str | os.PathLike]) -> list[Source]:
    """One source per video file (folders searched), named by its path relative to the folder it
    was found in without the extension, the faces to be found in the video itself."""
    from avemo.batch import find_jobs, safe_stem

    return [
        Source((job.relative.parent / safe_stem(job.relative.name)).as_posix(), job.source, None)
        for job in find_jobs(videos, ".")
    ]


class CropReader:
    """The crops of one crops folder as ``S x S x 3`` uint8 RGB, resized to ``S`` if needed."""

    def __init__(self, folder: Path, size: int):
        self.folder, self.size = folder, size
        self.frames = crop_frames(folder)
        if not self.frames:
            raise AvemoError("no face crops (%05d.jpg) in the crops folder", folder)

    def __call__(self, index: int) -> np.ndarray:
        import torch
        from torchvision.io import ImageReadMode, decode_image

        path = self.frames[index]
        try:
            image = decode_image(str(path), mode=ImageReadMode.RGB)
        except (RuntimeError, ValueError) as error:
            raise AvemoError(f"unreadable face crop ({error})", path) from None
        if tuple(image.shape[1:]) != (self.size, self.size):
            image = (
                torch.nn.functional.interpolate(
                    image[None].float(), size=(self.size, self.size), mode="bilinear",
                    antialias=True,
                )[0]
                .round()
                .clamp(0, 255)
                .to(torch.uint8)
            )
        return image.permute(1, 2, 0).contiguous().numpy()


def cache_description(backbones: Backbones) -> dict:
    """What ``cache.json`` says: backbones, preprocessing, clip and spectrogram settings."""
    from avemo import spectrogram
    from avemo.clips import CLIP_FRAMES, CLIP_WINDOW

    return {
        "format": CACHE_FORMAT,
        "visual": backbones.description["visual"],
        "audio": backbones.description["audio"],
        "clip": {"frames": CLIP_FRAMES, "window": CLIP_WINDOW, "tiling": "dense"},
        "spectrogram": {
            "sample_rate": spectrogram.SAMPLE_RATE,
            "n_fft": spectrogram.N_FFT,
            "win_length": spectrogram.WIN_LENGTH,
            "hop_length": spectrogram.HOP_LENGTH,
            "n_mels": spectrogram.N_MELS,
            "top_db": spectrogram.TOP_DB,
            "db_mean": spectrogram.DB_MEAN,
            "db_std": spectrogram.DB_STD,
            "frames": spectrogram.N_FRAMES,
        },
    }


@dataclass
class _Outputs:
    """The features of one video as they come: visual rows memory-mapped on ``scratch``."""

    n: int
    scratch: Path | None
    visual: np.ndarray | None = None
    audio: np.ndarray | None = None

    def add(self, ends: np.ndarray, audio, visual) -> None:
        if self.visual is None:
            shape = (self.n, visual.shape[1])
            self.visual = (
                np.empty(shape, np.float32)
                if self.scratch is None
                else np.lib.format.open_memmap(self.scratch, "w+", np.float32, shape)
            )
        self.visual[ends] = visual
        if audio is not None:
            if self.audio is None:
                self.audio = np.empty((self.n, audio.shape[1]), np.float32)
            self.audio[ends] = audio


def _video_faces(source: Source, detector, detect_every: int):
    """Times, frame rate, face presence and landmarks of the dominant face, found in the video."""
    from avemo.face.scan import detect_tracks

    scan = detect_tracks(source.video, detector, detect_every=detect_every)
    tracks = scan.tracks(1)
    if not tracks:
        raise AvemoError("no face found in the video", source.video)
    return scan, tracks[0]


def extract_video(
    source: Source,
    engine: FeatureEngine,
    *,
    detector=None,
    detect_every: int = DETECT_EVERY_ANNOTATE,
    progress: bool | None = None,
    sibling: Features | None = None,
    scratch: Path | None = None,
) -> Features:
    """Features of every clip of one video (dense: the clip ending at each frame).

    Crops come from ``source.crops``, or (None) from the video's dominant face found with
    ``detector`` as annotate finds it. ``sibling``: the cached features of the other half of a
    two-person video (same video file); its audio features are reused instead of computed again.
    ``scratch``: a file that holds the visual features as they come (memory-mapped), so that
    memory stays flat however long the video and wide the features (25088-d); the caller
    deletes it after writing.
    """
    from contextlib import nullcontext

    from tqdm import tqdm

    from avemo.clips import window_has_face
    from avemo.decode import AudioReader, frame_times, iter_frames, probe
    from avemo.face.align import align

    if source.crops is None:
        scan, track = _video_faces(source, detector, detect_every)
        info, times, present = scan.info, scan.times, track.present
        decoded = len(times)
    else:
        reader = CropReader(source.crops, engine.size)
        info = probe(source.video)
        times = frame_times(iter_frames(source.video, info=info))  # lost frames keep numbers
        decoded = len(times)
        last = max(reader.frames) + 1
        if last > len(times):  # crops past the decoded frames: extend the clock at the frame rate
            log.warning(
                "%s: crops go up to frame %d but the video has %d frames",
                source.crops, last, len(times),
            )  # fmt: skip
            extra = np.arange(1, last - len(times) + 1) / info.fps
            times = np.concatenate([times, times[-1] + extra])
        present = np.zeros(len(times), dtype=bool)
        present[list(reader.frames)] = True
    n = len(times)
    if sibling is not None and len(sibling.frame) == n:
        audio, shared = None, np.asarray(sibling.audio)
        has_audio = bool(sibling.info.get("audio"))
    else:
        # streamed: the clips' windows move forwards, so memory stays flat for long videos
        audio, shared = AudioReader(source.video), None
        has_audio = not audio.missing
    if not has_audio:
        log.warning("%s: no audio stream; the audio features are those of silence", source.video)
    stream = ClipStream(engine, present, times, info.fps, audio, stride=1)
    out = _Outputs(n, scratch)
    bar = tqdm(
        total=n,
        desc=source.name,
        unit="clip",
        disable=None if progress is None else not progress,
        leave=False,
    )
    with bar, audio or nullcontext():
        if source.crops is None:
            frames, pending = iter(iter_frames(source.video, info=info)), None
            for index in range(n):  # every frame number; a number lost to damage has no image
                if pending is None:
                    pending = next(frames, None)
                image = None
                if pending is not None and pending.index == index:
                    image, pending = pending.image, None
                crop = None
                if stream.needed[index]:  # never a lost frame: no face where there is no image
                    crop = align(image, track.landmarks[index], engine.size)
                for batch in stream.push(index, crop):
                    out.add(*batch)
                bar.update()
        else:
            for index in range(n):
                crop = reader(index) if stream.needed[index] else None
                for batch in stream.push(index, crop):
                    out.add(*batch)
                bar.update()
        for batch in stream.flush():
            out.add(*batch)
    return Features(
        name=source.name,
        audio=out.audio if shared is None else shared,
        visual=out.visual,
        frame=np.arange(1, n + 1, dtype=np.int64),
        face=window_has_face(present),
        info={
            "video": str(source.video.resolve()),
            "crops": None if source.crops is None else str(source.crops.resolve()),
            "frames": n,
            "decoded_frames": decoded,
            "fps": info.fps,
            "crops_present": int(present.sum()),
            "audio": has_audio,
        },
    )


def _sibling(output: Path, source: Source) -> Features | None:
    """The cached features of the other half of a two-person video, if any (same video file)."""
    stem = Path(source.name).name
    base = pair_base(stem)
    for side in SIDES if base != stem else ():
        path = output / Path(source.name).with_name(f"{base}_{side}{FEATURE_SUFFIX}")
        if f"{base}_{side}" != stem and path.exists():
            try:
                features = read_features(path)
            except AvemoError:
                continue
            if features.info.get("video") == str(source.video.resolve()):
                return features
    return None


@functools.lru_cache(maxsize=2)
def _engine(
    visual, audio, pipeline, device: str, batch_size: int, bf16: bool, backend: str = "auto"
) -> FeatureEngine:
    """The backbones on their backends, loaded once per process (a batch, or a Ray worker's
    many videos)."""
    from avemo.devices import torch_device

    device = torch_device(device)
    backbones = load_backbones(visual, audio, pipeline=pipeline, device=device)
    return FeatureEngine(
        backbones, device=device, batch_size=batch_size, bf16=bf16, backend=backend
    )


def extract_job(
    job,
    *,
    work: dict,
    output: Path,
    engine: tuple,
    detector: tuple | None,
    detect_every: int,
    progress: bool | None,
) -> dict:
    """One video of a batch, as a picklable per-job function (what a Ray worker runs).

    ``work``: output stem -> :class:`Source` (or ``(name, problem)``); ``engine`` and
    ``detector``: the arguments of the per-process caches. Returns this process's loads so far.
    """
    source = work[job.output_stem]
    if not isinstance(source, Source):
        raise AvemoError(source[1], source[0])
    scratch = job.output(".visual.part.npy")
    scratch = scratch.with_name("." + scratch.name)  # hidden: not a cache entry
    scratch.parent.mkdir(parents=True, exist_ok=True)
    try:
        features = extract_video(
            source,
            _engine(*engine),
            detector=None if detector is None else cached_detector(*detector),
            detect_every=detect_every,
            progress=progress,
            sibling=_sibling(output, source),
            scratch=scratch,
        )
        write_features(job.output(FEATURE_SUFFIX), features)
    finally:
        scratch.unlink(missing_ok=True)
    return {
        "model_loads": _engine.cache_info().misses,
        "detector_loads": cached_detector.cache_info().misses,
    }


def extract(
    videos: Sequence[str | os.PathLike],
    crops: str | os.PathLike | None,
    output: str | os.PathLike,
    *,
    visual: str | os.PathLike | None = None,
    audio: str | os.PathLike | None = None,
    pipeline: str | os.PathLike | None = None,
    labels: Sequence[str | os.PathLike] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "auto",
    bf16: bool = False,
    detector: str = "centerface",
    detector_model: str | os.PathLike | None = None,
    detect_size: int | None = None,
    detect_every: int = DETECT_EVERY_ANNOTATE,
    threshold: float | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    stream=None,
    ray: str | None = None,
    gpus_per_video: float | None = None,
    cpus_per_video: float | None = None,
    retries: int | None = None,
    backend: str = "auto",
):
    """Extract the features of every crops folder (or every labelled video) into ``output``.

    ``videos`` are the media files (or folders of them) that give each video's frame times and
    audio; ``crops`` holds one folder of aligned face crops per video, or is None to find the
    faces in the videos as ``avemo annotate`` does (``detector`` ... ``threshold``: its options).
    With ``labels`` (folders of ``<video>.txt``) only the labelled videos are extracted and a
    missing crops folder or video is an error. Videos already in the cache are skipped unless
    ``overwrite``; ``ray``: extract the videos on a Ray cluster (:mod:`avemo.cluster`;
    ``gpus_per_video`` ... ``retries`` are its options). Returns the
    :class:`avemo.batch.BatchResult`.
    """
    from avemo.backends import parse_backend
    from avemo.batch import Job, check_collisions, check_output, run_batch
    from avemo.dataset import label_files
    from avemo.devices import torch_device

    backend = parse_backend(backend)  # a usage error, before anything else
    output = Path(output)
    from avemo import cluster  # light: it imports Ray only for an address

    on_ray = cluster.executor(
        ray,
        device=device,
        gpus_per_video=gpus_per_video,
        cpus_per_video=cpus_per_video,
        retries=retries,
        progress=bool(progress),
    )
    requested = str(device)
    if on_ray is None:  # on Ray, each worker resolves the device on its own node
        device = torch_device(device)
    names = sorted(label_files(labels)) if labels else None
    if crops is None:
        sources = video_sources(videos)
        if names is not None:
            found = {s.name: s for s in sources}
            sources = [found.get(n, (n, "no video file for this label file")) for n in names]
        # a Ray worker resolves the device it was given (auto: the GPU Ray assigned it)
        detector_args = (
            detector, detector_model, detect_size, threshold,
            requested if on_ray else str(device), backend, bf16,
        )  # fmt: skip
        # the options checked here, before any video
        cached_detector(*detector_args[:4], "cpu" if on_ray else str(device), backend, bf16)
    else:
        sources = find_sources(videos, crops, names)
        detector_args = None
    engine_args = (
        visual, audio, pipeline, requested if on_ray else str(device), batch_size, bf16, backend
    )  # fmt: skip
    if on_ray:  # the driver only needs the backbones' description
        backbones = load_backbones(visual, audio, pipeline=pipeline, device="cpu")
    else:
        backbones = _engine(*engine_args).backbones
    description = cache_description(backbones)
    description["precision"] = "bf16 autocast" if bf16 else "fp32"
    description["backend"] = backend
    cache_json = output / CACHE_JSON
    if cache_json.exists() and not overwrite:
        existing = read_cache_info(output)
        precision = existing.get("precision", "fp32")
        if precision != description["precision"]:
            raise AvemoError(
                f"this cache holds {precision} features; use another folder or --overwrite", output
            )
        for role in ("visual", "audio"):
            if existing[role]["sha256"] != description[role]["sha256"]:
                raise AvemoError(
                    f"this cache holds features of another {role} backbone "
                    f"({existing[role]['checkpoint']}); use another folder or --overwrite",
                    output,
                )
    check_output(output)
    with atomic_path(cache_json) as tmp:
        tmp.write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")

    jobs, work = [], {}
    for source in sources:
        name = source.name if isinstance(source, Source) else source[0]
        media = source.video if isinstance(source, Source) else Path(name)
        job = Job(media, Path(name), output / name)
        jobs.append(job)
        work[job.output_stem] = source
    check_collisions(jobs)

    process = functools.partial(
        extract_job,
        work=work,
        output=output,
        engine=engine_args,
        detector=detector_args,
        detect_every=detect_every,
        progress=False if on_ray else progress,
    )
    return run_batch(
        jobs,
        process,
        outputs=lambda job: [job.output(FEATURE_SUFFIX)],
        overwrite=overwrite,
        stream=stream,
        executor=on_ray,
    )
