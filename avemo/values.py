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

from avemo import backends
from avemo.clips import (
    CLIP_WINDOW,
    clip_ends,
    sequences,
    to_frames,
    window_has_face,
)
from avemo.face.align import align, expression_crop
from avemo.features import Backbones, ClipStream, FeatureEngine, weights_digest
from avemo.models import expression


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


def expression_source(path, sha256: str) -> backends.Source:
    """The expression model of the checkpoint at ``path`` (content ``sha256``) for
    :func:`avemo.backends.load`: uint8 ``N x 64 x 64`` crops -> ``N x 7`` probabilities."""

    def module():
        from avemo import models
        from avemo.models.deploy import ExpressionNetwork

        return ExpressionNetwork(models.load(path))

    size = expression.EXPRESSION_SIZE
    return backends.Source(
        "expression",
        {"checkpoint": sha256, "input": ["batch", size, size, "uint8"]},
        inputs=("crops",),
        outputs=("probabilities",),
        module=module,
        example=lambda: (np.zeros((2, size, size), np.uint8),),
    )


def expression_probabilities(
    network,
    crops: np.ndarray | Sequence[np.ndarray],
    *,
    batch_size: int = 256,
    device="cpu",
    bf16: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the expression model on N gray 64x64 crops, batched: -> (N x 7 probabilities, N x 2
    valence/arousal).

    ``network`` is the model on a backend (:func:`expression_source` loaded by
    :func:`avemo.backends.load`), or a torch module (the checkpoint's network), which runs on
    torch on ``device``, under bf16 autocast with ``bf16``.
    """
    if hasattr(network, "state_dict"):  # a torch module
        from avemo.models.deploy import ExpressionNetwork

        network = backends.TorchNetwork(ExpressionNetwork(network), device, bf16)
    size = expression.EXPRESSION_SIZE
    crops = np.asarray(crops, dtype=np.uint8).reshape(-1, size, size)
    out = np.empty((len(crops), len(expression.EMOTIONS)), dtype=np.float32)
    step = max(int(batch_size), 1)
    for start in range(0, len(crops), step):
        (probs,) = network(crops[start : start + step])
        out[start : start + len(probs)] = probs
    return out, expression.expression_to_va(out)


class ExpressionPredictor:
    """Valence/arousal per frame from the expression classifier, batched across frames.

    ``network`` is the model on its backend (:func:`expression_source`)."""

    def __init__(
        self,
        network,
        present: np.ndarray,
        *,
        stride: int,
        batch_size: int,
        timer: Timer,
    ) -> None:
        self.network, self.batch_size = network, batch_size
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
        with self.timer("backbones"):
            self.probs[self._frames], _ = expression_probabilities(
                self.network, self._crops, batch_size=len(self._crops)
            )
        self._crops, self._frames = [], []

    def finish(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Per-frame ``N x 2`` values (NaN on frames without a face) and per-class columns."""
        self._flush()
        computed = np.flatnonzero(self.needed)
        va = expression.expression_to_va(self.probs[computed])
        values = to_frames(computed, va, self.num_frames)
        values[~self.present] = np.nan
        probs = to_frames(computed, self.probs[computed], self.num_frames)
        probs[~self.present] = np.nan
        extra = {f"p_{name}": probs[:, k] for k, name in enumerate(expression.EMOTIONS)}
        return values, extra


def head_source(pipeline, dims: tuple[int, int], share: bool, sha256: str | None = None):
    """The fusion head of ``pipeline`` for :func:`avemo.backends.load`: ``B x L x Da`` audio and
    ``B x L x Dv`` visual features -> ``B x L x 2`` values (and ``B x L`` audio shares)."""

    def module():
        from avemo.models.deploy import HeadNetwork

        return HeadNetwork(pipeline.head, share)

    length = int(pipeline.seq_len)
    da, dv = dims
    return backends.Source(
        "head",
        {
            "checkpoint": sha256 or weights_digest(pipeline.head),
            "part": "head",
            "share": bool(share),
            "input": [["batch", length, da], ["batch", length, dv]],
        },
        inputs=("audio", "visual"),
        outputs=("values", "audio_share") if share else ("values",),
        module=module,
        example=lambda: (
            np.zeros((2, length, da), np.float32),
            np.zeros((2, length, dv), np.float32),
        ),
    )


class FusionPredictor:
    """Valence/arousal per frame from a whole audio-visual pipeline (backbones + fusion head).

    ``pipeline`` is an :class:`avemo.models.Pipeline` (``sha256``: its checkpoint's, the key of
    its converted networks); the backbones run in the feature engine
    (:class:`avemo.features.ClipStream`, the same code as ``avemo extract``), the head once per
    block of ``32 * L`` frames, when all the clips of the block's sequences are known; each on
    ``backend`` (:mod:`avemo.backends`). ``audio`` is anything with the ``window(t0, t1)`` of
    :class:`avemo.decode.AudioReader`; ``times`` the decoded frames' timestamps.
    """

    def __init__(
        self,
        pipeline,
        present: np.ndarray,
        times: np.ndarray,
        fps: float,
        audio,
        *,
        stride: int,
        device,
        batch_size: int,
        bf16: bool,
        timer: Timer,
        share: bool = True,
        backend: str = "auto",
        sha256: str | None = None,
    ) -> None:
        self.pipeline, self.device, self.bf16, self.timer = pipeline, device, bf16, timer
        self.backend, self.sha256 = backend, sha256
        self.share = share  # also compute audio_share (avemo.models.share) per clip
        engine = FeatureEngine(
            Backbones.of_pipeline(pipeline, sha256),
            device=device,
            batch_size=batch_size,
            bf16=bf16,
            timer=timer,
            backend=backend,
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
        self._features: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._dims: tuple[int, int] | None = None
        self.head_network = None  # the head on its backend, once the first block runs
        self.values = np.full((len(self.ends), 2), np.nan, np.float32)
        self.shares = np.full((len(self.ends), 1), np.nan, np.float32)

    def head(self):
        """The head on its backend, loaded once per process and settings (kept on the pipeline,
        which annotate loads once per batch)."""
        runtimes = self.pipeline.__dict__.setdefault("avemo_runtimes", {})
        key = ("head", self.backend, str(self.device), self.bf16, self.share, self._dims)
        if key not in runtimes:
            source = head_source(self.pipeline, self._dims, self.share, self.sha256)
            runtimes[key] = backends.load(
                source, backend=self.backend, device=self.device, bf16=self.bf16
            )
        self.head_network = runtimes[key]
        return self.head_network

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
        audio = np.zeros((len(seqs), self.seq_len, da), np.float32)
        visual = np.zeros((len(seqs), self.seq_len, dv), np.float32)
        for b, seq in enumerate(seqs):
            for i, end in enumerate(seq):
                if int(end) in self._features:
                    audio[b, i], visual[b, i] = self._features.pop(int(end))
        with self.timer("head"):
            outputs = self.head()(audio, visual)
        out = outputs[0]
        for b, seq in enumerate(seqs):
            for i, end in enumerate(seq):
                if int(end) < self.num_frames:
                    self.values[int(end) // self.stride] = out[b, i]
                    if self.share:
                        self.shares[int(end) // self.stride] = outputs[1][b, i]

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
