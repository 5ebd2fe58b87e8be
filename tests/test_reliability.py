"""The per-modality reliability columns: voice (Silero VAD), face_size / face_frontal (landmarks),
audio_share (fusion heads)."""

from __future__ import annotations

import media
import numpy as np
import pytest
import tiny
import torch
import webrtcvad

from avemo import models
from avemo.decode import iter_frames, load_audio, probe
from avemo.face.pose import ARCFACE_TEMPLATE, face_frontal, face_size
from avemo.models.share import audio_share
from avemo.voice import VAD_RATE, frame_voice, window_means

WEBRTC_MODE = 3  # webrtcvad's most aggressive setting (fewest non-speech frames called speech)
WEBRTC_FRAME = 480  # samples: 30 ms at 16 kHz
SPEECH = 0.25  # a window "has speech" when this share of it is speech (either detector)


def _frame_times(path):
    info = probe(path)
    return info, np.array([f.time for f in iter_frames(path, info=info)])


@pytest.fixture(scope="module")
def vad_voice(vad_clip):
    info, times = _frame_times(vad_clip)
    return info, times, frame_voice(vad_clip, times, info.fps, has_audio=info.has_audio)


def _inside(times, fps, segment):
    """Frames whose whole 32-frame window lies inside the ``segment`` (s)."""
    first = times[np.maximum(np.arange(len(times)) - 31, 0)]
    return (first >= segment[0]) & (times + 1 / fps <= segment[1])


def test_voice_is_high_on_speech_and_low_on_silence_noise_and_tones(vad_voice):
    info, times, voice = vad_voice
    assert voice.shape == times.shape and np.all((voice >= 0) & (voice <= 1))
    speech = _inside(times, info.fps, media.VAD_SEGMENTS["speech"])
    assert speech.sum() >= 30 and np.median(voice[speech]) > 0.4
    for name in ("silence", "noise", "tone"):
        frames = _inside(times, info.fps, media.VAD_SEGMENTS[name])
        assert frames.sum() >= 10, name
        assert voice[frames].max() < 0.1, name


def test_voice_agrees_with_webrtcvad_on_speech_and_silence(vad_clip, vad_voice):
    info, times, voice = vad_voice
    audio = load_audio(vad_clip, VAD_RATE, info=info)
    pcm = (np.clip(audio.samples, -1, 1) * 32767).astype(np.int16)
    vad = webrtcvad.Vad(WEBRTC_MODE)
    count = len(pcm) // WEBRTC_FRAME
    flags = np.array(
        [
            vad.is_speech(pcm[i * WEBRTC_FRAME : (i + 1) * WEBRTC_FRAME].tobytes(), VAD_RATE)
            for i in range(count)
        ],
        dtype=float,
    )
    centres = audio.start + (np.arange(count) + 0.5) * WEBRTC_FRAME / VAD_RATE
    other = window_means(centres, flags, times, info.fps)
    # webrtcvad calls noise and tones speech: compare where the audio is speech or silence
    scored = times + 1 / info.fps <= media.VAD_SEGMENTS["silence"][1]
    agree = (voice[scored] > SPEECH) == (other[scored] > SPEECH)
    assert scored.sum() > 100 and agree.mean() > 0.85


def test_voice_is_zero_without_audio_and_nan_free(carphone):
    info, times = _frame_times(carphone)
    assert not info.has_audio
    assert np.array_equal(frame_voice(carphone, times, info.fps, has_audio=False), np.zeros(120))
    # a file without audio read as if it had some: the reader finds none, still 0
    assert np.array_equal(frame_voice(carphone, times, info.fps), np.zeros(120))


def test_window_means_average_the_chunks_of_each_clip_window():
    centres = np.arange(100) * 0.032 + 0.016
    probs = (centres > 1.6).astype(float)
    times = np.arange(100) / 30
    means = window_means(centres, probs, times, 30.0)
    assert means[40] == 0.0  # window [0.3, 1.37) s: all silence
    assert means[-1] == 1.0  # window [2.27, 3.33) s: all speech
    assert 0 < means[60] < 1


def test_face_size_and_frontal_from_landmarks():
    frontal = ARCFACE_TEMPLATE
    assert face_size(frontal) == pytest.approx(35.24, abs=0.01)
    assert face_frontal(frontal) == pytest.approx(1.0, abs=1e-3)
    # scale, roll and translation do not change the score
    angle = np.deg2rad(25)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = 3.0 * frontal @ rotation.T + [400, -20]
    assert face_frontal(moved) == pytest.approx(1.0, abs=1e-3)
    assert face_size(moved) == pytest.approx(3 * 35.24, abs=0.05)
    # the nose moving towards an eye (yaw) or towards the mouth (pitch) lowers it, to 0
    turned = frontal.copy()
    scores = []
    for shift in (4.0, 9.0, 18.0):
        turned[2, 0] = frontal[2, 0] + shift
        scores.append(float(face_frontal(turned)))
    assert 1 > scores[0] > scores[1] > scores[2] == 0.0
    nodding = frontal.copy()
    nodding[2, 1] += 6.0
    assert 0 < face_frontal(nodding) < 1
    mirrored = frontal.copy()
    mirrored[2, 0] = frontal[2, 0] - 9.0
    turned[2, 0] = frontal[2, 0] + 9.0
    assert face_frontal(mirrored) == pytest.approx(float(face_frontal(turned)), abs=0.02)
    # vectorised over frames, NaN where there is no face
    stack = np.stack([frontal, np.full((5, 2), np.nan)])
    assert np.isnan(face_size(stack)[1]) and np.isnan(face_frontal(stack)[1])
    assert face_frontal(stack.reshape(2, 10))[0] == pytest.approx(1.0, abs=1e-3)


def _zero(head, names):
    with torch.no_grad():
        for name in names:
            parameter = head.get_parameter(name)
            parameter.zero_()
    return head


def _features(seed=0, batch=2, length=16, da=32, dv=32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, da, generator=g), torch.randn(batch, length, dv, generator=g)


# the parameters through which each head reads each modality
READERS = {
    "jca": {"audio": ["encoder1.weight"], "visual": ["encoder2.weight"]},
    "jmt": {
        # the audio encoder's output is its last LayerNorm's (bias only), and the joint stream
        # reads [V | A] through out_layer_pv: its audio columns
        "audio": ["mm_transformer.physiological_encoder.layers.0.layer_norm2.weight"],
        "visual": ["mm_transformer.visual_encoder.layers.0.layer_norm2.weight"],
    },
}


def _head(name):
    torch.manual_seed(0)
    if name == "jca":
        return models.build("jca", audio_dim=32, visual_dim=32, seq_len=16).eval()
    return models.build("jmt", dim=32, ffn_dim=32, hidden=16).eval()


def _silence_joint(head, name, half):
    """JMT's joint stream reads both modalities in one Linear: zero one modality's columns."""
    if name == "jmt":
        with torch.no_grad():
            weight = head.mm_transformer.out_layer_pv.weight  # reads [V | A]
            width = weight.shape[1] // 2
            weight[:, width:] = 0 if half == "audio" else weight[:, width:]
            weight[:, :width] = 0 if half == "visual" else weight[:, :width]
    return head


@pytest.mark.parametrize("name", ["jca", "jmt"])
def test_audio_share_is_0_without_audio_weights_and_1_without_visual_ones(name):
    audio, visual = _features()
    out, share = audio_share(_head(name), audio, visual)
    assert out.shape == (2, 16, 2) and share.shape == (2, 16)
    assert torch.all((share > 0) & (share < 1))  # a random head uses both
    assert torch.allclose(out, _head(name)(audio, visual))  # the same output as without
    deaf = _silence_joint(_zero(_head(name), READERS[name]["audio"]), name, "audio")
    assert torch.all(audio_share(deaf, audio, visual)[1] == 0)
    blind = _silence_joint(_zero(_head(name), READERS[name]["visual"]), name, "visual")
    assert torch.all(audio_share(blind, audio, visual)[1] == 1)


def test_audio_share_of_the_reference_jca_reads_audio_through_the_cross_attention_only():
    torch.manual_seed(0)
    head = models.build(
        "jca", audio_dim=32, visual_dim=32, seq_len=16, regressor_input="reference"
    ).eval()
    audio, visual = _features()
    share = audio_share(head, audio, visual)[1]
    assert torch.all((share > 0) & (share < 0.5))  # [V | X_att,v]: mostly visual
    # without its joint-correlation weights the attended visual features ignore the audio
    with torch.no_grad():
        head.W_cv.weight.zero_()
    assert torch.all(audio_share(head, audio, visual)[1] == 0)


def test_annotate_writes_every_reliability_column(talk_clip, tmp_path):
    from avemo.annotate import COLUMNS, RELIABILITY, annotate

    pipeline = tiny.trained_pipeline(tmp_path / "tiny.safetensors")
    table = annotate(talk_clip, pipeline, stride=8)
    assert list(table.columns[: len(COLUMNS)]) == list(COLUMNS)
    faced = table["success"] == 1
    assert faced.mean() > 0.9
    assert table.loc[faced, "face_size"].between(10, 60).all()
    assert table.loc[faced, "face_frontal"].median() > 0.6
    assert table["voice"].between(0, 1).all() and table["voice"].iloc[40:].mean() > 0.5
    predicted = table["valence"].notna()
    assert table.loc[predicted, "audio_share"].between(0, 1).all()
    assert table.loc[~predicted, "audio_share"].isna().all()
    record = table.attrs["avemo"]
    assert record["voice"]["audio"] and record["voice"]["note"] is None
    (face,) = record["summary"]
    assert 0 < face["audio_share_mean"] < 1 and face["voice_mean"] > 0.3
    assert set(RELIABILITY) <= set(table.columns)


@pytest.mark.parametrize(
    ("name", "kwargs", "dims"),
    [
        ("jca_tbiom", {"audio_dim": 16, "positions": 4, "joint_dim": 16, "hidden": 8}, (16, 64)),
        ("concat", {"audio_dim": 16, "visual_dim": 24}, (16, 24)),
        ("cross_attention", {"audio_dim": 16, "visual_dim": 24}, (16, 24)),
        ("leader_follower", {"audio_dim": 16, "visual_dim": 24}, (16, 24)),
    ],
)
def test_every_other_head_has_an_audio_share_too(name, kwargs, dims):
    torch.manual_seed(0)
    head = models.build(name, **kwargs).eval()
    audio, visual = torch.randn(2, 16, dims[0]), torch.randn(2, 16, dims[1])
    out, share = audio_share(head, audio, visual)
    assert torch.allclose(out, head(audio, visual))
    assert torch.all((share > 0) & (share < 1))


def test_a_per_dimension_head_has_the_mean_share_of_its_two_heads():
    torch.manual_seed(0)
    spec = {"builder": "jca", "kwargs": {"audio_dim": 16, "visual_dim": 24, "seq_len": 16}}
    head = models.build("per_dimension", valence=spec, arousal=spec).eval()
    audio, visual = torch.randn(2, 16, 16), torch.randn(2, 16, 24)
    out, share = audio_share(head, audio, visual)
    assert torch.allclose(out, head(audio, visual))
    _, valence = audio_share(head.valence, audio, visual)
    _, arousal = audio_share(head.arousal, audio, visual)
    assert torch.allclose(share, (valence + arousal) / 2)
    with torch.no_grad():  # no audio weights in either head: 0
        for part in (head.valence, head.arousal):
            part.encoder1.weight.zero_()
            part.encoder1.bias.zero_()
    assert torch.all(audio_share(head, audio, visual)[1] == 0)

