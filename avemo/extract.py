"""The feature cache: frozen backbones run once over every clip of a dataset (SPEC 2-3, 7).

Fusion heads train on backbone features, not pixels, so ``avemo extract`` computes them once.
A cache folder holds one ``<video>.npz`` per video (uncompressed, so that training memory-maps
it instead of loading it) with

- ``audio``  float32 ``[N, Da]``: audio backbone feature of each clip,
- ``visual`` float32 ``[N, Dv]``: visual backbone feature of each clip,
- ``frame``  int64 ``[N]``: the 1-based end frame of each clip (dense extraction: ``i + 1``),
- ``face``   bool ``[N]``: whether the clip's 32-frame window holds at least one face crop,
- ``info``   a JSON string: source video, crops folder, frame count, frame rate, audio present,

and one ``cache.json`` describing the backbones (builder, arguments, checkpoint file and sha256),
their preprocessing and the clip and spectrogram settings. Every video's file is written to a
temporary name and renamed, so an interrupted run leaves whole files only and a rerun skips them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avemo.errors import AvemoError
from avemo.files import atomic_path

log = logging.getLogger("avemo")

CACHE_FORMAT = 1  # version of cache.json and of the per-video files
CACHE_JSON = "cache.json"
FEATURE_SUFFIX = ".npz"
ARRAYS = ("audio", "visual", "frame", "face")


@dataclass
class Features:
    """The cached features of one video (arrays may be read-only memory maps)."""

    name: str
    audio: np.ndarray  # N x Da float32
    visual: np.ndarray  # N x Dv float32
    frame: np.ndarray  # N int64, 1-based end frame of each clip
    face: np.ndarray  # N bool, the clip's window holds a face
    info: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        """Frames of the video covered by the cache (the last end frame)."""
        return int(self.frame.max()) if len(self.frame) else 0


def write_features(path: str | os.PathLike, features: Features) -> None:
    """Write one video's features atomically as an uncompressed ``.npz``."""
    n = len(features.frame)
    if features.audio.shape[0] != n or features.visual.shape[0] != n or len(features.face) != n:
        raise ValueError("audio, visual, frame and face must have one row per clip")
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            audio=np.ascontiguousarray(features.audio, dtype=np.float32),
            visual=np.ascontiguousarray(features.visual, dtype=np.float32),
            frame=np.asarray(features.frame, dtype=np.int64),
            face=np.asarray(features.face, dtype=bool),
            info=np.array(json.dumps(features.info, sort_keys=True)),
        )


def _member_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz``; stored (uncompressed) numeric members are memory-mapped."""
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as handle:
        for member in archive.infolist():
            key = member.filename.removesuffix(".npy")
            if member.compress_type != zipfile.ZIP_STORED:
                with archive.open(member) as stream:
                    arrays[key] = np.lib.format.read_array(stream, allow_pickle=False)
                continue
            # local file header: 30 bytes, then the name and the extra field, then the data
            handle.seek(member.header_offset)
            local = handle.read(30)
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            handle.seek(member.header_offset + 30 + name_length + extra_length)
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            if dtype.hasobject:
                raise ValueError(f"member {key} holds Python objects")
            if dtype.kind == "U" or int(np.prod(shape)) == 0:
                handle.seek(member.header_offset + 30 + name_length + extra_length)
                arrays[key] = np.lib.format.read_array(handle, allow_pickle=False)
            else:
                order = "F" if fortran else "C"
                arrays[key] = np.memmap(
                    path, dtype=dtype, mode="r", offset=handle.tell(), shape=shape, order=order
                )
    return arrays


def read_features(path: str | os.PathLike, name: str | None = None) -> Features:
    """Open one video's cached features (memory-mapped); clear errors for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise AvemoError("no such feature file", path)
    try:
        arrays = _member_arrays(path)
    except (zipfile.BadZipFile, ValueError, OSError, struct.error) as error:
        raise AvemoError(
            f"not a readable feature file ({error}); delete it and rerun", path
        ) from None
    missing = [key for key in ARRAYS if key not in arrays]
    if missing:
        raise AvemoError(f"not an avemo feature file (missing {', '.join(missing)})", path)
    n = len(arrays["frame"])
    for key in ("audio", "visual"):
        if arrays[key].ndim != 2 or arrays[key].shape[0] != n:
            raise AvemoError(f"{key} has shape {arrays[key].shape}, expected {n} rows", path)
    info = json.loads(str(arrays["info"])) if "info" in arrays else {}
    return Features(
        name=name or path.stem,
        audio=arrays["audio"],
        visual=arrays["visual"],
        frame=np.asarray(arrays["frame"], dtype=np.int64),
        face=np.asarray(arrays["face"], dtype=bool),
        info=info,
    )


def read_cache_info(cache: str | os.PathLike) -> dict:
    """The ``cache.json`` of a feature cache folder."""
    path = Path(cache) / CACHE_JSON
    if not path.is_file():
        raise AvemoError(f"not a feature cache (no {CACHE_JSON}; run `avemo extract`)", cache)
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise AvemoError(f"corrupt cache description ({error})", path) from None
    if info.get("format") != CACHE_FORMAT:
        raise AvemoError(f"cache format {info.get('format')} is not supported", path)
    return info


def cached_videos(cache: str | os.PathLike) -> dict[str, Path]:
    """Video name -> feature file, for every ``.npz`` under ``cache`` (name: relative path)."""
    cache = Path(cache)
    found = {}
    for path in sorted(cache.rglob("*" + FEATURE_SUFFIX)):
        if path.name.startswith("."):
            continue  # a temporary file of an interrupted write
        found[path.relative_to(cache).with_suffix("").as_posix()] = path
    return found


# --- extraction ----------------------------------------------------------------------------------

CROP_PATTERN = re.compile(r"^(\d+)\.jpe?g$", re.IGNORECASE)  # %05d.jpg, 1-based frame number
FACE_SUFFIX = re.compile(r"_face\d+$")  # crops of face k > 0: OUT/<rel>/<stem>_face<k>/
DEFAULT_BATCH = 8  # clips per backbone forward pass


@dataclass(frozen=True)
class Source:
    """One video to extract: its cache name, media file (timestamps, audio) and crops folder."""

    name: str  # cache name: the crops folder relative to the crops root (posix)
    video: Path
    crops: Path


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
    from avemo.dataset import pair_base

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
        other_face = FACE_SUFFIX.sub("", stem)
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


class ClipMaker:
    """Normalised clips ``B x 3 x 8 x S x S`` from a folder of face crops (SPEC 2).

    Each crop is read once while the clips slide over the video (crops older than the current
    32-frame window are dropped). A missing frame index (``NO_FRAME``) is a black frame.
    """

    def __init__(self, frames: dict[int, Path], preprocessing: dict):
        self.frames = frames
        self.preprocessing = preprocessing
        self.size = tuple(preprocessing["size"])
        self.cache: dict[int, object] = {}

    def image(self, index: int):
        import torch
        from torchvision.io import ImageReadMode, decode_image

        if index not in self.cache:
            path = self.frames[index]
            try:
                image = decode_image(str(path), mode=ImageReadMode.RGB)
            except (RuntimeError, ValueError) as error:
                raise AvemoError(f"unreadable face crop ({error})", path) from None
            if tuple(image.shape[1:]) != self.size:
                image = (
                    torch.nn.functional.interpolate(
                        image[None].float(), size=self.size, mode="bilinear", antialias=True
                    )[0]
                    .round()
                    .clamp(0, 255)
                    .to(torch.uint8)
                )
            self.cache[index] = image
        return self.cache[index]

    def clips(self, indices: np.ndarray):
        """``B x 8`` frame indices (``NO_FRAME`` for black) -> normalised float clips."""
        import torch

        from avemo.clips import CLIP_WINDOW, NO_FRAME
        from avemo.models.backbones import normalise_clips

        black = torch.zeros((3, *self.size), dtype=torch.uint8)
        batch = torch.stack(
            [
                torch.stack([black if i == NO_FRAME else self.image(int(i)) for i in row], 1)
                for row in indices
            ]
        )
        oldest = int(indices.max()) - 2 * CLIP_WINDOW
        for index in [i for i in self.cache if i < oldest]:
            del self.cache[index]
        return normalise_clips(batch, self.preprocessing)


@dataclass
class Backbones:
    """The frozen backbones of an extraction, with what ``cache.json`` records about them."""

    visual: object  # nn.Module: clips -> B x Dv
    audio: object  # nn.Module: spectrograms -> B x Da
    description: dict  # {"visual": {...}, "audio": {...}}


def load_backbones(
    visual: str | os.PathLike | None = None,
    audio: str | os.PathLike | None = None,
    *,
    pipeline: str | os.PathLike | None = None,
    device="cpu",
) -> Backbones:
    """The backbones from avemo checkpoint files (names of ``avemo weights`` resolve too), or
    those of a pipeline checkpoint.
    """
    from avemo import hub, models
    from avemo.files import sha256_file

    parts = {}
    if pipeline is not None:
        if visual is not None or audio is not None:
            raise AvemoError("give either a pipeline or the two backbones, not both")
        path = hub.resolve(pipeline)
        module = models.load(path)
        if models.read_header(path).get("component") != "pipeline":
            raise AvemoError("not a pipeline checkpoint", path)
        digest = sha256_file(path)
        for role in ("visual", "audio"):
            parts[role] = (getattr(module, role), path, digest, role)
    else:
        if visual is None or audio is None:
            raise AvemoError("give both a visual and an audio backbone (or a pipeline)")
        expected = {"visual": "visual_backbone", "audio": "audio_backbone"}
        for role, spec in (("visual", visual), ("audio", audio)):
            path = hub.resolve(spec)
            header = models.read_header(path)
            if header.get("component") != expected[role]:
                raise AvemoError(
                    f"not a {expected[role]} checkpoint ({header.get('component')})", path
                )
            parts[role] = (models.load(path), path, sha256_file(path), None)
    description = {}
    for role, (module, path, digest, part) in parts.items():
        config = module.avemo_config
        header = getattr(module, "avemo_header", None) or models.read_header(path)
        description[role] = {
            "builder": config["builder"],
            "kwargs": config["kwargs"],
            "preprocessing": config["preprocessing"],
            "checkpoint": str(Path(path).resolve()),
            "sha256": digest,
            "part": part,  # the pipeline's submodule, or None for a backbone checkpoint
            "trained": (header.get("provenance") or {}).get("trained"),
        }
        module.to(device).eval()
    return Backbones(parts["visual"][0], parts["audio"][0], description)


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


def extract_video(
    source: Source,
    backbones: Backbones,
    *,
    batch_size: int = DEFAULT_BATCH,
    device="cpu",
    progress: bool | None = None,
    sibling: Features | None = None,
    scratch: Path | None = None,
    bf16: bool = False,
) -> Features:
    """Features of every clip of one video (dense: the clip ending at each frame).

    ``sibling``: the cached features of the other half of a two-person video (same video file);
    its audio features are reused instead of computed again. ``scratch``: a file that holds the
    visual features as they come (memory-mapped), so that memory stays flat however long the
    video and wide the features (25088-d); the caller deletes it after writing. ``bf16``: the
    backbones run under bfloat16 autocast (features are stored as float32 either way).
    """
    from contextlib import nullcontext

    import torch
    from tqdm import tqdm

    from avemo.clips import clip_frames, window_has_face
    from avemo.decode import AudioReader, iter_frames, probe
    from avemo.devices import autocast
    from avemo.spectrogram import SAMPLE_RATE, LogMel, clip_waveforms

    info = probe(source.video)
    times = np.array([frame.time for frame in iter_frames(source.video, info=info)])
    decoded = len(times)
    frames = crop_frames(source.crops)
    if not frames:
        raise AvemoError("no face crops (%05d.jpg) in the crops folder", source.crops)
    last = max(frames) + 1
    if last > len(times):  # crops past the decoded frames: extend the clock at the frame rate
        log.warning(
            "%s: crops go up to frame %d but the video has %d frames",
            source.crops, last, len(times),
        )  # fmt: skip
        times = np.concatenate([times, times[-1] + np.arange(1, last - len(times) + 1) / info.fps])
    n = len(times)
    present = np.zeros(n, dtype=bool)
    present[list(frames)] = True
    if sibling is not None and len(sibling.frame) == n:
        audio, shared = None, np.asarray(sibling.audio)
        has_audio = bool(sibling.info.get("audio"))
    else:
        # streamed: the clips' windows move forwards, so memory stays flat for long videos
        audio, shared = AudioReader(source.video, SAMPLE_RATE), None
        has_audio = not audio.missing
    if not has_audio:
        log.warning("%s: no audio stream; the audio features are those of silence", source.video)
    clips = ClipMaker(frames, backbones.description["visual"]["preprocessing"])
    logmel = LogMel().to(device)
    audio_out, visual_out = [], None
    bar = tqdm(
        total=n,
        desc=source.name,
        unit="clip",
        disable=None if progress is None else not progress,
        leave=False,
    )
    with torch.inference_mode(), autocast(torch.device(device), bf16), bar, audio or nullcontext():
        for start in range(0, n, batch_size):
            ends = np.arange(start, min(start + batch_size, n))
            indices = np.stack([clip_frames(int(e), present) for e in ends])
            visual = backbones.visual(clips.clips(indices).to(device)).float().cpu().numpy()
            if visual_out is None:
                shape = (n, visual.shape[1])
                visual_out = (
                    np.empty(shape, np.float32)
                    if scratch is None
                    else np.lib.format.open_memmap(scratch, "w+", np.float32, shape)
                )
            visual_out[start : start + len(ends)] = visual
            if shared is None:
                waves = torch.from_numpy(clip_waveforms(audio, times, ends, info.fps)).to(device)
                audio_out.append(backbones.audio(logmel(waves)).float().cpu())
            bar.update(len(ends))
    return Features(
        name=source.name,
        audio=torch.cat(audio_out).numpy() if shared is None else shared,
        visual=visual_out,
        frame=np.arange(1, n + 1, dtype=np.int64),
        face=window_has_face(present),
        info={
            "video": str(source.video.resolve()),
            "crops": str(source.crops.resolve()),
            "frames": n,
            "decoded_frames": decoded,
            "fps": info.fps,
            "crops_present": int(present.sum()),
            "audio": has_audio,
        },
    )


def _sibling(output: Path, source: Source) -> Features | None:
    """The cached features of the other half of a two-person video, if any (same video file)."""
    from avemo.dataset import pair_base
    from avemo.labels import SIDES

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


def extract(
    videos: Sequence[str | os.PathLike],
    crops: str | os.PathLike,
    output: str | os.PathLike,
    *,
    visual: str | os.PathLike | None = None,
    audio: str | os.PathLike | None = None,
    pipeline: str | os.PathLike | None = None,
    labels: Sequence[str | os.PathLike] | None = None,
    batch_size: int = DEFAULT_BATCH,
    device: str = "auto",
    bf16: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    stream=None,
):
    """Extract the features of every crops folder (or every labelled video) into ``output``.

    ``videos`` are the media files (or folders of them) that give each video's frame times and
    audio; ``crops`` holds one folder of aligned face crops per video. With ``labels`` (folders
    of ``<video>.txt``) only the labelled videos are extracted and a missing crops folder or
    video is an error. Videos already in the cache are skipped unless ``overwrite``; returns the
    :class:`avemo.batch.BatchResult`.
    """
    from avemo.batch import Job, run_batch
    from avemo.dataset import label_files
    from avemo.devices import torch_device

    output = Path(output)
    device = torch_device(device)
    names = sorted(label_files(labels)) if labels else None
    sources = find_sources(videos, crops, names)
    backbones = load_backbones(visual, audio, pipeline=pipeline, device=device)
    description = cache_description(backbones)
    description["precision"] = "bf16 autocast" if bf16 else "fp32"
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
    output.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache_json) as tmp:
        tmp.write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")

    jobs, work = [], {}
    for source in sources:
        name = source.name if isinstance(source, Source) else source[0]
        media = source.video if isinstance(source, Source) else Path(name)
        job = Job(media, Path(name), output / name)
        jobs.append(job)
        work[job.output_stem] = source

    def process(job: Job) -> None:
        source = work[job.output_stem]
        if not isinstance(source, Source):
            raise AvemoError(source[1], source[0])
        scratch = job.output(".visual.part.npy")
        scratch = scratch.with_name("." + scratch.name)  # hidden: not a cache entry
        scratch.parent.mkdir(parents=True, exist_ok=True)
        try:
            features = extract_video(
                source,
                backbones,
                batch_size=batch_size,
                device=device,
                progress=progress,
                sibling=_sibling(output, source),
                scratch=scratch,
                bf16=bf16,
            )
            write_features(job.output(FEATURE_SUFFIX), features)
        finally:
            scratch.unlink(missing_ok=True)

    return run_batch(
        jobs,
        process,
        outputs=lambda job: [job.output(FEATURE_SUFFIX)],
        overwrite=overwrite,
        stream=stream,
    )
