"""The feature engine: a face track's aligned crops and the audio -> clips, spectrograms, features.

This is the one code path from pixels and samples to backbone features. ``avemo annotate`` runs
it and feeds the features to the fusion head (:mod:`avemo.values`); ``avemo extract`` runs it and
caches the features for training (:mod:`avemo.extract`). Because both call the same code, a head
trained on cached features sees at annotation time exactly what it was trained on (tested:
``tests/test_features.py``).

- :class:`Backbones`: the two frozen networks and their input preprocessing (from a pipeline or
  two backbone checkpoints, :func:`load_backbones`).
- :class:`FeatureEngine`: uint8 clips and waveforms -> features, batched, on a device, with
  channels-last 3D convolutions and optional bf16 autocast.
- :class:`ClipStream`: one track's crops, fed frame by frame in order -> the features of the clips
  that end on the stride grid (SPEC 2), with the audio of each clip's 32-frame window (SPEC 3).
  Only the crops that some clip samples are asked for, and only the last 32 are kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avemo import backends
from avemo.clips import CLIP_FRAMES, CLIP_WINDOW, NO_FRAME, clip_ends, clip_frames
from avemo.errors import AvemoError
from avemo.spectrogram import N_FRAMES, N_MELS, LogMel, clip_waveforms

DEFAULT_BATCH_SIZE = 8  # clips per forward pass: on 2 CPU cores larger batches are no faster and
# raise peak memory (benchmarks/annotate.py)


def weights_digest(module) -> str:
    """sha256 of a torch module's tensors (names, shapes, bytes): the cache key of a network
    that did not come from a checkpoint file."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(bytes(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


@dataclass
class Backbones:
    """The frozen visual and audio backbones, with what a feature cache records about them."""

    visual: object  # torch module: normalised clips B x 3 x T x H x W -> B x Dv
    audio: object  # torch module: spectrograms B x 1 x 64 x 107 -> B x Da
    description: dict  # role -> builder, kwargs, preprocessing, checkpoint, sha256, part, trained
    runtimes: dict = field(default_factory=dict)  # (role, backend, device, bf16) -> network

    @property
    def visual_preprocessing(self) -> dict:
        return self.description["visual"]["preprocessing"]

    @classmethod
    def of_pipeline(cls, pipeline, sha256: str | None = None) -> Backbones:
        """The backbones of a loaded :class:`avemo.models.Pipeline` (``sha256``: of its
        checkpoint file; the key of the backbones' converted networks)."""
        description = {}
        for role in ("visual", "audio"):
            config = getattr(pipeline, role).avemo_config
            description[role] = {
                "builder": config["builder"],
                "kwargs": config["kwargs"],
                "preprocessing": config["preprocessing"],
            }
            if sha256 is not None:
                description[role].update(sha256=sha256, part=role)
        runtimes = pipeline.__dict__.setdefault("avemo_runtimes", {})
        return cls(pipeline.visual, pipeline.audio, description, runtimes)

    def source(self, role: str) -> backends.Source:
        """The ``visual`` or ``audio`` backbone for :func:`avemo.backends.load` (uint8 clips in,
        with the backbone's normalisation inside; log-mel spectrograms in)."""
        from avemo.models import deploy

        entry = self.description[role]
        module = getattr(self, role)
        key = {
            "checkpoint": entry.get("sha256") or weights_digest(module),
            "part": entry.get("part"),
            "builder": entry["builder"],
            "kwargs": entry["kwargs"],
            "preprocessing": entry["preprocessing"],
        }
        if role == "visual":
            size = _side(entry["preprocessing"])
            shape = (2, CLIP_FRAMES, size, size, 3)
            return backends.Source(
                "visual",
                key,
                inputs=("clips",),
                outputs=("features",),
                module=lambda: deploy.VisualNetwork(module, entry["preprocessing"]),
                example=lambda: (np.zeros(shape, np.uint8),),
            )
        return backends.Source(
            "audio",
            key,
            inputs=("spectrograms",),
            outputs=("features",),
            module=lambda: deploy.AudioNetwork(module),
            example=lambda: (np.zeros((2, 1, N_MELS, N_FRAMES), np.float32),),
        )

    def runtime(self, role: str, backend: str, device, bf16: bool):
        """The ``role`` backbone loaded on ``backend`` (:func:`avemo.backends.load`), once per
        settings for the life of these backbones."""
        key = (role, backend, str(device), bool(bf16))
        if key not in self.runtimes:
            self.runtimes[key] = backends.load(
                self.source(role), backend=backend, device=device, bf16=bf16
            )
        return self.runtimes[key]


def _side(preprocessing: dict) -> int:
    size = preprocessing["size"]
    return int(size[0] if isinstance(size, list | tuple) else size)


def load_backbones(
    visual: str | os.PathLike | None = None,
    audio: str | os.PathLike | None = None,
    *,
    pipeline: str | os.PathLike | None = None,
    device="cpu",
) -> Backbones:
    """The backbones from avemo checkpoint files (names of ``avemo weights`` resolve too), or
    those of a pipeline checkpoint; on ``device``, in eval mode."""
    from avemo import hub, models
    from avemo.files import sha256_file

    parts = {}
    if pipeline is not None:
        if visual is not None or audio is not None:
            raise AvemoError("give either a pipeline or the two backbones, not both")
        path = hub.resolve(pipeline)
        if models.read_header(path).get("component") != "pipeline":
            raise AvemoError("not a pipeline checkpoint", path)
        module = models.load(path)
        digest = sha256_file(path)
        for role in ("visual", "audio"):
            parts[role] = (getattr(module, role), path, digest, role, module.avemo_header)
    else:
        if visual is None or audio is None:
            raise AvemoError("give both a visual and an audio backbone (or a pipeline)")
        for role, spec in (("visual", visual), ("audio", audio)):
            path = hub.resolve(spec)
            header = models.read_header(path)
            if header.get("component") != models.ROLES[role]:
                raise AvemoError(
                    f"not a {models.ROLES[role]} checkpoint ({header.get('component')})", path
                )
            parts[role] = (models.load(path), path, sha256_file(path), None, header)
    description = {}
    for role, (module, path, digest, part, header) in parts.items():
        config = module.avemo_config
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


class _NoTimer:
    """Stands in for :class:`avemo.values.Timer` when nobody times the stages."""

    def __call__(self, stage: str):
        import contextlib

        return contextlib.nullcontext()


class FeatureEngine:
    """Clips and waveforms -> backbone features, batched, each backbone on ``backend``.

    Clips are uint8 ``B x T x H x W x 3`` RGB (what alignment gives), normalised inside the
    visual network with the backbone's own preprocessing record; waveforms ``B x S`` at 44.1 kHz
    become log-mel spectrograms here (:class:`avemo.spectrogram.LogMel`, torchaudio on the CPU or
    the torch device). ``bf16`` runs both backbones in bfloat16 where the backend can (torch
    autocast, OpenVINO); features come back as float32 arrays either way.
    """

    def __init__(
        self,
        backbones: Backbones,
        *,
        device="cpu",
        batch_size: int = DEFAULT_BATCH_SIZE,
        bf16: bool = False,
        timer=None,
        backend: str = "auto",
    ) -> None:
        self.backbones, self.device = backbones, device
        self.batch_size, self.bf16 = max(int(batch_size), 1), bool(bf16)
        self.timer = timer or _NoTimer()
        self.preprocessing = backbones.visual_preprocessing
        self.size = _side(self.preprocessing)
        self.visual = backbones.runtime("visual", backend, device, self.bf16)
        self.audio = backbones.runtime("audio", backend, device, self.bf16)
        self.backend = {"visual": self.visual.backend, "audio": self.audio.backend}
        # the spectrogram where the audio network runs: on the GPU with torch on CUDA
        on_torch = self.audio.backend == "torch"
        self.logmel = LogMel().to(self.audio.device if on_torch else "cpu")

    def encode(self, clips: np.ndarray, waves: np.ndarray | None):
        """``(audio B x Da or None, visual B x Dv)`` float32 feature arrays; ``waves=None``
        skips the audio backbone."""
        with self.timer("backbones"):
            (visual,) = self.visual(np.ascontiguousarray(clips))
            audio = None
            if waves is not None:
                specs = self.logmel(waves)
                if self.audio.backend != "torch":
                    specs = specs.cpu().numpy()
                (audio,) = self.audio(specs)
        return audio, visual


def needed_frames(present: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Which frames' crops the clips ending at ``ends`` sample (so others need no alignment)."""
    needed = np.zeros(len(present), dtype=bool)
    for end in ends:
        frames = clip_frames(int(end), present)
        needed[frames[frames != NO_FRAME]] = True
    return needed


Batch = tuple[np.ndarray, np.ndarray | None, np.ndarray]  # end frames, audio, visual


class ClipStream:
    """One face track through a video: crops in, features of the clips on the grid out.

    ``present[i]`` says whether the track has a face in frame ``i``; ``times`` are the frames'
    timestamps and ``fps`` the nominal rate (for the audio windows, SPEC 3); ``audio`` is
    anything with :meth:`avemo.decode.AudioReader.window` (called with non-decreasing start
    times), or None to compute visual features only. Feed every frame in order with
    :meth:`push` (a crop where :attr:`needed` says so, else None); each call returns the batches
    of features that became complete, :meth:`flush` the rest.
    """

    def __init__(
        self,
        engine: FeatureEngine,
        present: np.ndarray,
        times: np.ndarray,
        fps: float,
        audio,
        *,
        stride: int = 1,
    ) -> None:
        self.engine = engine
        self.present = np.asarray(present, dtype=bool)
        self.times, self.fps, self.audio = np.asarray(times, dtype=np.float64), fps, audio
        self.num_frames = len(self.present)
        self.stride = int(stride)
        self.ends = clip_ends(self.num_frames, self.stride)
        self.needed = needed_frames(self.present, self.ends)
        self._crops: dict[int, np.ndarray] = {}
        self._pending: list[tuple[int, np.ndarray]] = []

    def push(self, index: int, crop: np.ndarray | None) -> list[Batch]:
        """Feed frame ``index``; ``crop`` (S x S x 3 uint8) is required where ``needed``."""
        if self.needed[index]:
            if crop is None:
                raise ValueError(f"frame {index}: a clip samples this frame, its crop is needed")
            self._crops[index] = crop
        self._crops.pop(index - CLIP_WINDOW, None)
        if index % self.stride == 0:
            self._pending.append((index, self._clip(index)))
            if len(self._pending) >= self.engine.batch_size:
                return self.flush()
        return []

    def _clip(self, end: int) -> np.ndarray:
        """The clip ending at ``end`` as ``T x S x S x 3`` uint8 (zeros for a faceless window)."""
        size = self.engine.size
        clip = np.zeros((CLIP_FRAMES, size, size, 3), dtype=np.uint8)
        for t, frame in enumerate(clip_frames(end, self.present)):
            if frame != NO_FRAME:
                clip[t] = self._crops[int(frame)]
        return clip

    def flush(self) -> list[Batch]:
        """Encode the clips waiting for a full batch."""
        if not self._pending:
            return []
        ends = np.array([end for end, _ in self._pending])
        clips = np.stack([clip for _, clip in self._pending])
        self._pending = []
        waves = None
        if self.audio is not None:
            with self.engine.timer("audio"):
                waves = clip_waveforms(self.audio, self.times, ends, self.fps)
        audio, visual = self.engine.encode(clips, waves)
        return [(ends, audio, visual)]


def iter_batches(stream: ClipStream, crop: Callable[[int], np.ndarray]) -> Iterator[Batch]:
    """Feed ``stream`` every frame in order, asking ``crop(index)`` for the needed crops, and
    yield the batches of features as they complete (so memory stays flat in video length)."""
    for index in range(stream.num_frames):
        yield from stream.push(index, crop(index) if stream.needed[index] else None)
    yield from stream.flush()
