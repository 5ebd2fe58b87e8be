"""Audio input of the seeds: one normalised 64 x 107 log-mel spectrogram per clip (SPEC 3).

For a clip ending at frame ``e`` the audio is that of the clip's 32-frame window (frames
``e-31 .. e``), taken by timestamps so that variable frame rates are right, left-zero-padded when
the window starts before the audio does.
"""

from __future__ import annotations

import numpy as np

from avemo.clips import CLIP_WINDOW

SAMPLE_RATE = 44_100  # Hz: audio is resampled to this rate (SPEC 3)
N_FFT = 1024  # samples
WIN_LENGTH = 882  # samples, 20 ms at 44.1 kHz
HOP_LENGTH = 441  # samples, 10 ms at 44.1 kHz
N_MELS = 64  # mel bands
TOP_DB = 80.0  # dB below the spectrogram's peak that are kept
DB_MEAN = -14.8  # dB; normalisation (x - DB_MEAN) / DB_STD
DB_STD = 19.895  # dB
N_FRAMES = 107  # spectrogram frames kept per clip (the last ones; left-zero-padded)


class LogMel:
    """Waveforms ``B x S`` at 44.1 kHz -> normalised log-mel spectrograms ``B x 1 x 64 x 107``.

    torchaudio's transforms, on a torch device (:meth:`to`; waveforms, arrays or tensors
    anywhere, are moved there); torch and torchaudio are imported here, not with the module, so
    that the audio-free default path never loads them.
    """

    def __init__(self):
        import torch
        import torchaudio

        self.device = torch.device("cpu")
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE,
            n_fft=N_FFT,
            win_length=WIN_LENGTH,
            hop_length=HOP_LENGTH,
            n_mels=N_MELS,
            window_fn=torch.hann_window,
            power=2.0,
            center=True,
        )
        self.to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=TOP_DB)

    def to(self, device) -> LogMel:
        import torch

        self.device = torch.device(device)
        self.mel.to(self.device)
        self.to_db.to(self.device)
        return self

    def __call__(self, waveforms):
        import torch

        with torch.inference_mode():
            waves = torch.as_tensor(waveforms).to(self.device, torch.float32)
            # B x 1 x M x T: AmplitudeToDB applies top_db per item only with a channel axis (on a
            # B x M x T tensor it would clamp against the peak of the whole batch)
            spec = self.to_db(self.mel(waves).unsqueeze(1))
            spec = (spec - DB_MEAN) / DB_STD
            frames = spec.shape[-1]
            if frames >= N_FRAMES:
                return spec[..., frames - N_FRAMES :]
            return torch.nn.functional.pad(spec, (N_FRAMES - frames, 0))


def window_bounds(times: np.ndarray, end: int, fps: float) -> tuple[float, float]:
    """Start and end time (s) of the audio of the clip ending at frame ``end``.

    The window runs from the first frame of the clip's 32-frame window to the end of frame
    ``end``; before the first frame it is extended at the nominal frame rate, and the last frame
    is taken to last one nominal frame period.
    """
    period = 1.0 / fps
    first = end - CLIP_WINDOW + 1
    start = times[first] if first >= 0 else times[0] + first * period
    return float(start), float(times[end] + period)


def clip_waveforms(audio, times: np.ndarray, ends: np.ndarray, fps: float) -> np.ndarray:
    """The waveforms of the clips ending at ``ends``: ``len(ends) x S``, left-zero-padded.

    ``audio`` is an :class:`avemo.decode.Audio` on the video's clock; ``times`` the frames'
    timestamps. All rows get the length of the longest window so that they batch.
    """
    windows = [audio.window(*window_bounds(times, int(e), fps)) for e in ends]
    width = max((len(w) for w in windows), default=0)
    out = np.zeros((len(windows), width), dtype=np.float32)
    for row, w in zip(out, windows, strict=True):
        row[width - len(w) :] = w
    return out
