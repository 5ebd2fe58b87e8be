"""What the reliability columns cost ``avemo annotate``: fps with and without them, one run.

``annotate(..., reliability=False)`` skips the ``voice`` column (Silero VAD) and the extra head
passes of ``audio_share`` (``face_size``/``face_frontal`` are closed forms of the landmarks and
always computed): the "before" numbers. Default model and the journal JCA configuration
(R(2+1)D-18 + audio ResNet18 + JCA, L = 16, random weights with ``allow_untrained``: speed
only), each a fresh process on the 640x480 30 fps test video of ``benchmarks/annotate.py``,
without and with the columns alternated ``--repeats`` times (best of each kept).

    python benchmarks/reliability.py
    python benchmarks/reliability.py --minutes 0.5 --skip-jca
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-jca", action="store_true")
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("bench_annotate", HERE / "annotate.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = bench.make_video(tmp / "face.mp4", args.minutes * 60)
        models = [("default model", None, {})]
        if not args.skip_jca:
            jca = str(bench.jca_checkpoint(tmp / "jca.safetensors"))
            models.append(("JCA L=16 bf16 stride 8 (random weights)", jca, {"bf16": True}))
        for label, model, options in models:
            runs = {False: [], True: []}
            for _ in range(args.repeats):
                for reliability in (False, True):
                    result = bench.measure(
                        video, model, {**options, "reliability": reliability}, tmp / "o.csv"
                    )
                    runs[reliability].append(result)
            best = {k: max(v, key=lambda r: r["fps"]) for k, v in runs.items()}
            for reliability, name in ((False, "without"), (True, "with")):
                bench.report(f"{label}, {name} voice/audio_share", best[reliability])
            ratio = best[True]["fps"] / best[False]["fps"]
            print(f"{label}: with the reliability columns at {ratio:.0%} of the speed", flush=True)


if __name__ == "__main__":
    main()
