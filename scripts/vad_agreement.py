"""How well the ``voice`` column agrees with an independent detector (webrtcvad) on a video.

Computes avemo's per-frame ``voice`` (:func:`avemo.voice.frame_voice`) and, on the same 16 kHz
audio, webrtcvad's speech decisions per 30 ms frame averaged over the same clip windows; prints
the share of frames where both are above (or both below) ``--threshold``. webrtcvad is in the
``dev`` extra. README, Annotate, quotes this for ``/work/shared/media/Megamind.avi``.

    python scripts/vad_agreement.py VIDEO [--mode 3] [--threshold 0.5]
"""

from __future__ import annotations

import argparse

import numpy as np
import webrtcvad

from avemo.decode import iter_frames, load_audio, probe
from avemo.voice import VAD_RATE, frame_voice, window_means

WEBRTC_FRAME = 480  # samples: 30 ms at 16 kHz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--mode", type=int, default=3, help="webrtcvad aggressiveness, 0-3")
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args()
    info = probe(args.video)
    times = np.array([f.time for f in iter_frames(args.video, info=info)])
    voice = frame_voice(args.video, times, info.fps, has_audio=info.has_audio)
    audio = load_audio(args.video, VAD_RATE, info=info)
    pcm = (np.clip(audio.samples, -1, 1) * 32767).astype(np.int16)
    vad = webrtcvad.Vad(args.mode)
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
    ours, theirs = voice > args.threshold, other > args.threshold
    print(
        f"{args.video}: {len(times)} frames; speech in {ours.mean():.1%} (avemo voice) and "
        f"{theirs.mean():.1%} (webrtcvad mode {args.mode}) of the frames; they agree on "
        f"{(ours == theirs).mean():.1%}; correlation {np.corrcoef(voice, other)[0, 1]:.3f}"
    )


if __name__ == "__main__":
    main()
