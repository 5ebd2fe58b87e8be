"""Per-frame values for one face track: the inference loops of the two kinds of model.

Both predictors are fed the video's frames in order (the second pass over the video) and keep only
what the next outputs need, so memory does not grow with the video's length:

- :class:`ExpressionPredictor` (the offline default): one expression-classifier output per frame
  with a face, on the ``stride`` grid, mapped to valence/arousal.
- :class:`FusionPredictor` (the seeds' audio-visual pipelines, SPEC 2, 3, 6): 8-frame clips of
  aligned crops ending on the ``stride`` grid, the audio of each clip's 32-frame window as a
  log-mel spectrogram, both backbones batched across clips, and the fusion head once per block of
  ``32 * L`` frames, when all the clips of the block's sequences are known.

Values between computed end frames come from :func:`avemo.clips.to_frames` (linear
interpolation); smoothing is the caller's business.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import torch

from avemo.clips import (
    CLIP_FRAMES,
    CLIP_WINDOW,
    NO_FRAME,
    clip_ends,
    clip_frames,
    sequences,
    to_frames,
    window_has_face,
)
from avemo.devices import autocast, to_device
from avemo.face.align import align, expression_crop
from avemo.models.backbones import normalise_clips
from avemo.spectrogram import LogMel, clip_waveforms


class Timer:
    """Seconds spent per pipeline stage (decode, detect, align, backbones, head, write)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start


class ExpressionPredictor:
    """Valence/arousal per frame from the expression classifier, batched across frames."""

    def __init__(
        self,
        model: torch.nn.Module,
        present: np.ndarray,
        *,
        stride: int,
        device: torch.device,
        batch_size: int,
        bf16: bool,
        timer: Timer,
    ) -> None:
        from avemo.models import expression

        self.expression = expression
        self.model, self.device, self.batch_size, self.bf16 = model, device, batch_size, bf16
        self.present = np.asarray(present, dtype=bool)
        self.num_frames = len(self.present)
        self.needed = np.zeros(self.num_frames, dtype=bool)
        self.needed[clip_ends(self.num_frames, stride)] = True
        self.needed &= self.present
        self.timer = timer
        self._crops: list[np.ndarray] = []
        self._frames: list[int] = []
        self.probs = np.full((self.num_frames, len(expression.EMOTIONS)), np.nan, np.float32)

    def push(self, index: int, image: np.ndarray, landmarks: np.ndarray) -> None:
        """Feed frame ``index`` (RGB) with this track's 5 landmarks there (NaN without a face)."""
        if not self.needed[index]:
            return
        with self.timer("align"):
            self._crops.append(expression_crop(image, landmarks))
        self._frames.append(index)
        if len(self._crops) >= self.batch_size:
            self._flush()

    def _flush(self) -> None:
        if not self._crops:
            return
        with self.timer("backbones"), torch.inference_mode():
            self.probs[self._frames], _ = self.expression.predict(
                self.model,
                self._crops,
                device=self.device,
                batch_size=len(self._crops),
                bf16=self.bf16,
            )
        self._crops, self._frames = [], []

    def finish(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Per-frame ``N x 2`` values (NaN on frames without a face) and per-class columns."""
        self._flush()
        computed = np.flatnonzero(self.needed)
        va = self.expression.expression_to_va(self.probs[computed])
        values = to_frames(computed, va, self.num_frames)
        values[~self.present] = np.nan
        probs = to_frames(computed, self.probs[computed], self.num_frames)
        probs[~self.present] = np.nan
        extra = {f"p_{name}": probs[:, k] for k, name in enumerate(self.expression.EMOTIONS)}
        return values, extra


def needed_frames(present: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Which frames' crops the clips ending at ``ends`` sample (so others need no alignment)."""
    needed = np.zeros(len(present), dtype=bool)
    for end in ends:
        frames = clip_frames(int(end), present)
        needed[frames[frames != NO_FRAME]] = True
    return needed


class FusionPredictor:
    """Valence/arousal per frame from a whole audio-visual pipeline (backbones + fusion head).

    ``pipeline`` is an :class:`avemo.models.Pipeline`; ``audio`` anything with the
    ``window(t0, t1)`` of :class:`avemo.decode.AudioReader` (called with non-decreasing ``t0``);
    ``times`` the decoded frames' timestamps.
    """

    def __init__(
        self,
        pipeline: torch.nn.Module,
        present: np.ndarray,
        times: np.ndarray,
        fps: float,
        audio,
        *,
        stride: int,
        device: torch.device,
        batch_size: int,
        bf16: bool,
        timer: Timer,
    ) -> None:
        self.pipeline, self.device, self.batch_size, self.bf16 = pipeline, device, batch_size, bf16
        self.present = np.asarray(present, dtype=bool)
        self.times, self.fps, self.audio, self.timer = np.asarray(times), fps, audio, timer
        self.num_frames = len(self.present)
        self.seq_len = int(pipeline.seq_len)
        self.block = CLIP_WINDOW * self.seq_len
        self.preprocessing = pipeline.visual_preprocessing
        size = self.preprocessing["size"]
        self.size = int(size[0] if isinstance(size, list | tuple) else size)
        self.logmel = LogMel().to(device)
        # 3D convolutions run faster on channels-last clips (oneDNN, cuDNN); a no-op for the rest
        self.memory_format = torch.channels_last_3d
        for module in pipeline.visual.modules():
            if isinstance(module, torch.nn.Conv3d):
                module.to(memory_format=self.memory_format)
        self.stride = stride
        self.ends = clip_ends(self.num_frames, stride)  # row k of self.values is end k * stride
        self.needed = needed_frames(self.present, self.ends)
        self.blocks: dict[int, list[np.ndarray]] = defaultdict(list)
        for seq in sequences(self.num_frames, self.seq_len, stride):
            self.blocks[int(seq[0]) // self.block].append(seq)
        self._crops: dict[int, np.ndarray] = {}
        self._pending: list[tuple[int, np.ndarray]] = []
        self._features: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._dims: tuple[int, int] | None = None
        self.values = np.full((len(self.ends), 2), np.nan, np.float32)

    def push(self, index: int, image: np.ndarray, landmarks: np.ndarray) -> None:
        """Feed frame ``index`` (RGB) with this track's 5 landmarks there (NaN without a face);
        the face is aligned only when a clip samples this frame."""
        if self.needed[index]:
            with self.timer("align"):
                self._crops[index] = align(image, landmarks, self.size)
        self._crops.pop(index - CLIP_WINDOW, None)
        if index % self.stride == 0:
            self._pending.append((index, self._clip(index)))
            if len(self._pending) >= self.batch_size:
                self._encode()
        if index % self.block == self.block - 1 or index == self.num_frames - 1:
            self._encode()
            self._fuse(index // self.block)

    def _clip(self, end: int) -> np.ndarray:
        """The clip ending at ``end`` as ``T x H x W x 3`` uint8 (zeros for a faceless window)."""
        clip = np.zeros((CLIP_FRAMES, self.size, self.size, 3), dtype=np.uint8)
        for t, frame in enumerate(clip_frames(end, self.present)):
            if frame != NO_FRAME:
                clip[t] = self._crops[int(frame)]
        return clip

    def _encode(self) -> None:
        """Both backbones on the pending clips, batched."""
        if not self._pending:
            return
        ends = np.array([end for end, _ in self._pending])
        clips = np.stack([clip for _, clip in self._pending])
        self._pending = []
        with self.timer("audio"):
            waves = clip_waveforms(self.audio, self.times, ends, self.fps)
        with self.timer("backbones"), torch.inference_mode():
            x = to_device(clips, self.device).permute(0, 4, 1, 2, 3)
            x = normalise_clips(x, self.preprocessing).contiguous(memory_format=self.memory_format)
            specs = self.logmel(to_device(waves, self.device))
            with autocast(self.device, self.bf16):
                visual = self.pipeline.encode_visual(x).float()
                audio = self.pipeline.encode_audio(specs).float()
        self._dims = (audio.shape[1], visual.shape[1])
        for k, end in enumerate(ends):
            self._features[int(end)] = (audio[k], visual[k])

    def _fuse(self, block: int) -> None:
        """The fusion head on every sequence of ``block``; padding clips get zero features."""
        seqs = self.blocks.pop(block, [])
        if not seqs or self._dims is None:
            return
        da, dv = self._dims
        audio = torch.zeros(len(seqs), self.seq_len, da, device=self.device)
        visual = torch.zeros(len(seqs), self.seq_len, dv, device=self.device)
        for b, seq in enumerate(seqs):
            for i, end in enumerate(seq):
                if int(end) in self._features:
                    audio[b, i], visual[b, i] = self._features.pop(int(end))
        with self.timer("head"), torch.inference_mode(), autocast(self.device, self.bf16):
            out = self.pipeline.fuse(audio, visual).float().cpu().numpy()
        for b, seq in enumerate(seqs):
            for i, end in enumerate(seq):
                if int(end) < self.num_frames:
                    self.values[int(end) // self.stride] = out[b, i]

    def finish(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Per-frame ``N x 2`` values, NaN on frames whose 32-frame window has no face."""
        self._encode()
        for block in sorted(self.blocks):
            self._fuse(block)
        values = to_frames(self.ends, self.values, self.num_frames)
        values[~window_has_face(self.present)] = np.nan
        return values, {}
