"""Is someone speaking? Silero VAD on the video's own audio, per frame (the ``voice`` column).

The model is the Silero VAD ONNX file that the ``silero-vad`` wheel ships (MIT licence; its
"sequence" export, which gives the same per-chunk probabilities as the streaming model but runs a
block of chunks per call), run with onnxruntime directly; the package itself is never imported
(it would load torch and change torch's thread count). Audio is decoded by :mod:`avemo.decode`
(first stream, mono, on the video's clock, silence where it is missing) at 16 kHz and cut into
32 ms chunks (512 samples) from the first frame's time on; the model gives each chunk a speech
probability. A frame's ``voice`` is the mean probability of the chunks whose centres fall in its
clip window, the 32 frames ending at it (SPEC 2; fewer at the start): the expected share of the
window with speech. A video without an audio stream gets 0 everywhere.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
from pathlib import Path

import numpy as np

from avemo.clips import CLIP_WINDOW
from avemo.errors import AvemoError

VAD_RATE = 16_000  # Hz: the rate the model was trained at
CHUNK = 512  # samples per probability (32 ms at 16 kHz)
CONTEXT = 64  # samples of the previous chunk that the model sees before each chunk
STATE = 128  # width of the model's LSTM state
BLOCK = 512  # chunks per ONNX call (16.4 s of audio)
MODEL_FILE = "silero_vad/data/silero_vad_16k_sequence.onnx"
DISTRIBUTION = "silero-vad"


def model_path() -> Path:
    """The ONNX file in the installed ``silero-vad`` wheel (found without importing it)."""
    try:
        entries = importlib.metadata.files(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        entries = []
    for entry in entries:
        if str(entry).endswith(MODEL_FILE):
            path = Path(entry.locate())
            if path.exists():
                return path
    raise AvemoError("the voice activity model is missing: pip install silero-vad")


def describe() -> dict:
    """What the provenance records about the voice detector."""
    return {
        "model": "silero-vad",
        "version": importlib.metadata.version(DISTRIBUTION),
        "file": Path(MODEL_FILE).name,
        "sample_rate": VAD_RATE,
        "chunk_s": CHUNK / VAD_RATE,
        "window_frames": CLIP_WINDOW,
    }


@functools.lru_cache(maxsize=1)
def _session():
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        str(model_path()), sess_options=options, providers=["CPUExecutionProvider"]
    )


class Detector:
    """Speech probabilities of consecutive 16 kHz chunks, fed a block at a time (state kept)."""

    def __init__(self) -> None:
        self.session = _session()
        self.hidden = np.zeros((1, 1, STATE), np.float32)
        self.cell = np.zeros((1, 1, STATE), np.float32)
        self.context = np.zeros(CONTEXT, np.float32)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities of ``len(samples) // CHUNK`` chunks (a whole number of chunks)."""
        chunks = np.asarray(samples, np.float32).reshape(-1, CHUNK)
        if not len(chunks):
            return np.zeros(0, np.float32)
        contexts = np.empty((len(chunks), CONTEXT), np.float32)
        contexts[0] = self.context
        contexts[1:] = chunks[:-1, -CONTEXT:]
        self.context = chunks[-1, -CONTEXT:].copy()
        probs, self.hidden, self.cell = self.session.run(
            ["speech_probs", "hn", "cn"],
            {"input": np.concatenate([contexts, chunks], axis=1), "h": self.hidden, "c": self.cell},
        )
        return np.asarray(probs, np.float32).reshape(-1)


def speech_probabilities(audio, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
    """Chunk centres (s, on the video clock) and speech probabilities of ``[start, end)``.

    ``audio`` has the ``window(t0, t1)`` of :class:`avemo.decode.AudioReader` at ``VAD_RATE``
    (windows asked for in time order, so the reader streams).
    """
    count = max(0, int(np.ceil((end - start) * VAD_RATE / CHUNK)))
    detector = Detector()
    probs = []
    for first in range(0, count, BLOCK):
        n = min(BLOCK, count - first)
        t0 = start + first * CHUNK / VAD_RATE
        samples = audio.window(t0, t0 + n * CHUNK / VAD_RATE)[: n * CHUNK]
        if len(samples) < n * CHUNK:
            samples = np.pad(samples, (0, n * CHUNK - len(samples)))
        probs.append(detector(samples))
    centres = start + (np.arange(count) + 0.5) * CHUNK / VAD_RATE
    return centres, (np.concatenate(probs) if probs else np.zeros(0, np.float32))


def window_means(
    centres: np.ndarray, probs: np.ndarray, times: np.ndarray, fps: float
) -> np.ndarray:
    """Per frame, the mean of ``probs`` whose ``centres`` lie in the frame's clip window
    ``[times[e - 31], times[e] + 1 / fps)`` (the nearest chunk when none does)."""
    times = np.asarray(times, np.float64)
    if not len(times) or not len(probs):
        return np.zeros(len(times))
    first = times[np.maximum(np.arange(len(times)) - (CLIP_WINDOW - 1), 0)]
    last = times + 1.0 / fps
    lo = np.searchsorted(centres, first, side="left")
    hi = np.searchsorted(centres, last, side="left")
    total = np.concatenate([[0.0], np.cumsum(probs, dtype=np.float64)])
    nearest = np.clip(lo, 0, len(probs) - 1)
    empty = hi <= lo
    hi = np.where(empty, nearest + 1, hi)
    lo = np.where(empty, nearest, lo)
    return (total[hi] - total[lo]) / (hi - lo)


def frame_voice(
    path: str | os.PathLike, times: np.ndarray, fps: float, *, has_audio: bool = True
) -> np.ndarray:
    """The ``voice`` value of every frame at ``times``: 0 everywhere without an audio stream."""
    from avemo.decode import AudioReader

    times = np.asarray(times, np.float64)
    if not has_audio or not len(times):
        return np.zeros(len(times))
    with AudioReader(path, VAD_RATE) as reader:
        if reader.missing:
            return np.zeros(len(times))
        centres, probs = speech_probabilities(reader, times[0], times[-1] + 1.0 / fps)
    return window_means(centres, probs, times, fps)
