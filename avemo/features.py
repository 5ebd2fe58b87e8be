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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avemo.clips import CLIP_FRAMES, CLIP_WINDOW, NO_FRAME, clip_ends, clip_frames
from avemo.devices import autocast, to_device
from avemo.errors import AvemoError
from avemo.models.backbones import normalise_clips
from avemo.spectrogram import LogMel, clip_waveforms

DEFAULT_BATCH_SIZE = 8  # clips per forward pass: on 2 CPU cores larger batches are no faster and
# raise peak memory (benchmarks/annotate.py)


@dataclass
class Backbones:
    """The frozen visual and audio backbones, with what a feature cache records about them."""

    visual: torch.nn.Module  # normalised clips B x 3 x T x H x W -> B x Dv
    audio: torch.nn.Module  # spectrograms B x 1 x 64 x 107 -> B x Da
    description: dict  # role -> builder, kwargs, preprocessing, checkpoint, sha256, part, trained

    @property
    def visual_preprocessing(self) -> dict:
        return self.description["visual"]["preprocessing"]

    @classmethod
    def of_pipeline(cls, pipeline: torch.nn.Module) -> Backbones:
        """The backbones of a loaded :class:`avemo.models.Pipeline`."""
        description = {}
        for role in ("visual", "audio"):
            config = getattr(pipeline, role).avemo_config
            description[role] = {
                "builder": config["builder"],
                "kwargs": config["kwargs"],
                "preprocessing": config["preprocessing"],
            }
        return cls(pipeline.visual, pipeline.audio, description)


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
    """Clips and waveforms -> backbone features, batched on ``device``.

    Clips are uint8 ``B x T x H x W x 3`` RGB (what alignment gives), normalised here with the
    visual backbone's own preprocessing record; waveforms ``B x S`` at 44.1 kHz become log-mel
    spectrograms here (:class:`avemo.spectrogram.LogMel`). ``bf16`` runs both backbones under
    bfloat16 autocast; features come back as float32 either way.
    """

    def __init__(
        self,
        backbones: Backbones,
        *,
        device: torch.device,
        batch_size: int = DEFAULT_BATCH_SIZE,
        bf16: bool = False,
        timer=None,
    ) -> None:
        self.backbones, self.device = backbones, torch.device(device)
        self.batch_size, self.bf16 = max(int(batch_size), 1), bool(bf16)
        self.timer = timer or _NoTimer()
        self.preprocessing = backbones.visual_preprocessing
        size = self.preprocessing["size"]
        self.size = int(size[0] if isinstance(size, list | tuple) else size)
        self.logmel = LogMel().to(self.device)
        # 3D convolutions run faster on channels-last clips (oneDNN, cuDNN); a no-op for the rest
        self.memory_format = torch.channels_last_3d
        for module in backbones.visual.modules():
            if isinstance(module, torch.nn.Conv3d):
                module.to(memory_format=self.memory_format)

    def encode(
        self, clips: np.ndarray, waves: np.ndarray | None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(audio B x Da or None, visual B x Dv)`` float32 features on the engine's device;
        ``waves=None`` skips the audio backbone."""
        with self.timer("backbones"), torch.inference_mode():
            x = to_device(clips, self.device).permute(0, 4, 1, 2, 3)
            x = normalise_clips(x, self.preprocessing).contiguous(memory_format=self.memory_format)
            specs = None if waves is None else self.logmel(to_device(waves, self.device))
            with autocast(self.device, self.bf16):
                visual = self.backbones.visual(x).float()
                audio = None if specs is None else self.backbones.audio(specs).float()
        return audio, visual


def needed_frames(present: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Which frames' crops the clips ending at ``ends`` sample (so others need no alignment)."""
    needed = np.zeros(len(present), dtype=bool)
    for end in ends:
        frames = clip_frames(int(end), present)
        needed[frames[frames != NO_FRAME]] = True
    return needed


Batch = tuple[np.ndarray, torch.Tensor | None, torch.Tensor]  # end frames, audio, visual


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
