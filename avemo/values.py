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
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from avemo.clips import (
    CLIP_WINDOW,
    clip_ends,
    sequences,
    to_frames,
    window_has_face,
)
from avemo.devices import autocast, to_device
from avemo.face.align import align, expression_crop
from avemo.features import Backbones, ClipStream, FeatureEngine
from avemo.models.share import audio_share


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


def expression_probabilities(
    model: torch.nn.Module,
    crops: np.ndarray | Sequence[np.ndarray],
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    bf16: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the expression model on N gray 64x64 crops, batched: -> (N x 7 probabilities, N x 2
    valence/arousal).

    ``model`` must already be on ``device``; its parameters are switched to channels-last
    memory format (same results, several times faster convolutions on CPU). ``bf16`` runs the
    convolutions under bfloat16 autocast (the softmax stays float32). Copies to the device go
    through :func:`avemo.devices.to_device` (pinned, non-blocking on CUDA).
    """
    from avemo.models import expression

    device = torch.device(device)
    size = expression.EXPRESSION_SIZE
    crops = np.asarray(crops, dtype=np.uint8).reshape(-1, size, size)
    out = np.empty((len(crops), len(expression.EMOTIONS)), dtype=np.float32)
    model.to(memory_format=torch.channels_last)
    step = max(int(batch_size), 1)
    with torch.inference_mode():
        for start in range(0, len(crops), step):
            x = to_device(crops[start : start + step], device)
            x = expression.preprocess(x).contiguous(memory_format=torch.channels_last)
            with autocast(device, bf16):
                probs = model(x)
            out[start : start + len(x)] = probs.float().cpu().numpy()
    return out, expression.expression_to_va(out)


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
            self.probs[self._frames], _ = expression_probabilities(
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


class FusionPredictor:
    """Valence/arousal per frame from a whole audio-visual pipeline (backbones + fusion head).

    ``pipeline`` is an :class:`avemo.models.Pipeline`; the backbones run in the feature engine
    (:class:`avemo.features.ClipStream`, the same code as ``avemo extract``), the head once per
    block of ``32 * L`` frames, when all the clips of the block's sequences are known. ``audio``
    is anything with the ``window(t0, t1)`` of :class:`avemo.decode.AudioReader`; ``times`` the
    decoded frames' timestamps.
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
        share: bool = True,
    ) -> None:
        self.pipeline, self.device, self.bf16, self.timer = pipeline, device, bf16, timer
        self.share = share  # also compute audio_share (avemo.models.share) per clip
        engine = FeatureEngine(
            Backbones.of_pipeline(pipeline),
            device=device,
            batch_size=batch_size,
            bf16=bf16,
            timer=timer,
        )
        self.stream = ClipStream(engine, present, times, fps, audio, stride=stride)
        self.present = self.stream.present
        self.num_frames = self.stream.num_frames
        self.seq_len = int(pipeline.seq_len)
        self.block = CLIP_WINDOW * self.seq_len
        self.stride, self.size = stride, engine.size
        self.ends = self.stream.ends  # row k of self.values is end k * stride
        self.blocks: dict[int, list[np.ndarray]] = defaultdict(list)
        for seq in sequences(self.num_frames, self.seq_len, stride):
            self.blocks[int(seq[0]) // self.block].append(seq)
        self._features: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._dims: tuple[int, int] | None = None
        self.values = np.full((len(self.ends), 2), np.nan, np.float32)
        self.shares = np.full((len(self.ends), 1), np.nan, np.float32)

    def push(self, index: int, image: np.ndarray, landmarks: np.ndarray) -> None:
        """Feed frame ``index`` (RGB) with this track's 5 landmarks there (NaN without a face);
        the face is aligned only when a clip samples this frame."""
        crop = None
        if self.stream.needed[index]:
            with self.timer("align"):
                crop = align(image, landmarks, self.size)
        self._keep(self.stream.push(index, crop))
        if index % self.block == self.block - 1 or index == self.num_frames - 1:
            self._keep(self.stream.flush())
            self._fuse(index // self.block)

    def _keep(self, batches) -> None:
        for ends, audio, visual in batches:
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
            if self.share:
                out, share = audio_share(self.pipeline.head, audio, visual)
                share = share.float().cpu().numpy()
            else:
                out = self.pipeline.fuse(audio, visual)
            out = out.float().cpu().numpy()
        for b, seq in enumerate(seqs):
            for i, end in enumerate(seq):
                if int(end) < self.num_frames:
                    self.values[int(end) // self.stride] = out[b, i]
                    if self.share:
                        self.shares[int(end) // self.stride] = share[b, i]

    def finish(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Per-frame ``N x 2`` values, NaN on frames whose 32-frame window has no face."""
        self._keep(self.stream.flush())
        for block in sorted(self.blocks):
            self._fuse(block)
        values = to_frames(self.ends, self.values, self.num_frames)
        blank = ~window_has_face(self.present)
        values[blank] = np.nan
        if not self.share:
            return values, {}
        shares = to_frames(self.ends, self.shares, self.num_frames)[:, 0]
        shares[blank] = np.nan
        return values, {"audio_share": shares}
