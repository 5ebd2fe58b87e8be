import numpy as np
import pytest
import torch
import torchaudio

from avemo.spectrogram import (
    DB_MEAN,
    DB_STD,
    HOP_LENGTH,
    N_FFT,
    N_FRAMES,
    N_MELS,
    WIN_LENGTH,
    LogMel,
    clip_waveforms,
    window_bounds,
)

SR = 44100
WINDOW_30FPS = 47040  # samples in 32 frames at 30 fps


def reference_log_mel(wave: np.ndarray) -> np.ndarray:
    """Independent computation from the SPEC's description, one waveform at a time."""
    x = torch.from_numpy(wave).double()
    window = torch.hann_window(WIN_LENGTH, dtype=torch.float64)
    left = (N_FFT - WIN_LENGTH) // 2
    window = torch.nn.functional.pad(window, (left, N_FFT - WIN_LENGTH - left))
    stft = torch.stft(x, N_FFT, HOP_LENGTH, window=window, center=True, return_complex=True)
    power = stft.abs() ** 2
    fb = torchaudio.functional.melscale_fbanks(N_FFT // 2 + 1, 0.0, SR / 2, N_MELS, SR)
    mel = fb.double().T @ power
    db = 10 * torch.log10(torch.clamp(mel, min=1e-10))
    db = torch.maximum(db, db.max() - 80)
    return ((db - DB_MEAN) / DB_STD).numpy()


def tone(seconds: float, freq: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_one_clip_window_at_30_fps_gives_64_by_107():
    assert 1 + WINDOW_30FPS // HOP_LENGTH == N_FRAMES
    spec = LogMel()(torch.from_numpy(tone(WINDOW_30FPS / SR))[None])
    assert spec.shape == (1, 1, N_MELS, N_FRAMES)


def test_matches_independent_computation():
    rng = np.random.default_rng(0)
    wave = tone(WINDOW_30FPS / SR) + 0.05 * rng.standard_normal(WINDOW_30FPS).astype(np.float32)
    ours = LogMel()(torch.from_numpy(wave)[None])[0, 0].double().numpy()
    assert np.allclose(ours, reference_log_mel(wave), atol=2e-3)


def test_arrays_and_tensors_give_the_same_spectrogram_on_its_device():
    """The feature engine hands LogMel numpy waveforms (float32 or float64); they are moved to
    its device, as tensors are."""
    wave = tone(WINDOW_30FPS / SR)[None]
    logmel = LogMel().to("cpu")
    expected = logmel(torch.from_numpy(wave))
    for array in (wave, wave.astype(np.float64)):
        got = logmel(array)
        assert got.device == logmel.device == torch.device("cpu")
        assert got.dtype == torch.float32
        assert torch.allclose(got, expected, atol=1e-5)


def test_top_db_is_applied_per_clip_not_per_batch():
    loud, quiet = tone(1.0667, amplitude=0.9), tone(1.0667, amplitude=1e-4)
    batch = LogMel()(torch.from_numpy(np.stack([loud, quiet])))
    single = LogMel()(torch.from_numpy(quiet)[None])
    assert torch.allclose(batch[1], single[0], atol=1e-4)


def test_short_audio_is_left_zero_padded_and_long_audio_keeps_the_last_frames():
    short = LogMel()(torch.from_numpy(tone(0.5))[None])[0, 0]
    frames = 1 + int(0.5 * SR) // HOP_LENGTH
    assert (short[:, : N_FRAMES - frames] == 0).all()
    assert (short[:, N_FRAMES - frames :] != 0).any()
    wave = np.concatenate([tone(1.0, 200.0), tone(WINDOW_30FPS / SR, 3000.0)])  # 100 hops + tail
    long = LogMel()(torch.from_numpy(wave)[None])
    last = LogMel()(torch.from_numpy(wave[-WINDOW_30FPS:])[None])
    # the kept frames come from the end of the signal: same as computing the tail alone
    assert torch.allclose(long[..., 5:], last[..., 5:], atol=1e-3)


class FakeAudio:
    """The Audio.window contract: samples of [start, end) s, zero-padded outside the data."""

    def __init__(self, samples, rate=SR):
        self.samples, self.sample_rate = samples, rate

    def window(self, start, end):
        a, b = round(start * self.sample_rate), round(end * self.sample_rate)
        out = np.zeros(b - a, np.float32)
        lo, hi = max(a, 0), min(b, len(self.samples))
        if hi > lo:
            out[lo - a : hi - a] = self.samples[lo:hi]
        return out


def test_window_bounds_constant_frame_rate():
    times = np.arange(100) / 30.0
    start, end = window_bounds(times, 40, 30.0)
    assert start == pytest.approx(9 / 30) and end == pytest.approx(41 / 30)
    assert round((end - start) * SR) == WINDOW_30FPS


def test_window_bounds_use_timestamps_for_variable_frame_rate():
    times = np.cumsum(np.r_[0, np.where(np.arange(99) % 2, 1 / 20, 1 / 40)])
    start, end = window_bounds(times, 50, 30.0)
    assert start == times[19]
    assert end == pytest.approx(times[50] + 1 / 30)


def test_window_before_the_start_is_extended_and_zero_padded():
    times = np.arange(100) / 30.0
    start, end = window_bounds(times, 3, 30.0)
    assert start == pytest.approx(-28 / 30)
    samples = np.ones(SR * 4, np.float32)
    waves = clip_waveforms(FakeAudio(samples), times, np.array([3, 40]), 30.0)
    assert waves.shape == (2, WINDOW_30FPS)
    leading = round(28 / 30 * SR)
    assert (waves[0, :leading] == 0).all() and (waves[0, leading + 1 :] == 1).all()
    assert (waves[1] == 1).all()


def test_spectrograms_of_a_decoded_clip(av_clip):
    from avemo.decode import iter_frames, load_audio, probe

    info = probe(av_clip)
    times = np.array([f.time for f in iter_frames(av_clip, info=info)])
    ends = np.arange(7, len(times), 16)  # early clips start before the audio: zero-padded
    waves = clip_waveforms(load_audio(av_clip, info=info), times, ends, info.fps)
    assert waves.shape == (len(ends), round(32 / info.fps * SR))
    assert np.abs(waves[-1]).max() > 0.05  # the speech-like track is there
    spec = LogMel()(torch.from_numpy(waves))
    assert spec.shape == (len(ends), 1, N_MELS, N_FRAMES) == (len(ends), 1, 64, 107)
    assert torch.isfinite(spec).all()
