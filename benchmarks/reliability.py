"""What the reliability columns cost ``avemo annotate``: fps with and without them, one run.

``annotate(..., reliability=False)`` skips the ``voice`` column (Silero VAD) and the extra head
passes of ``audio_share`` (``face_size``/``face_frontal`` are closed forms of the landmarks and
always computed): the "before" numbers. Default model and the journal JCA configuration
(R(2+1)D-18 + audio ResNet18 + JCA, L = 16, random weights with ``allow_untrained``: speed
only), each a fresh process on the 640x480 30 fps test video of ``benchmarks/annotate.py``,
without and with the columns alternated ``--repeats`` times (best of each kept). On a shared
machine the fps of whole runs vary more than the columns cost, so it also prints the child
processes' CPU seconds and the seconds of the stages the columns add (``voice``, and the head's
extra passes for ``audio_share``), the direct measure of their cost.

    python benchmarks/reliability.py
    python benchmarks/reliability.py --minutes 0.5 --skip-jca
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
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
                    before = resource.getrusage(resource.RUSAGE_CHILDREN)
                    result = bench.measure(
                        video, model, {**options, "reliability": reliability}, tmp / "o.csv"
                    )
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    result["cpu_s"] = (after.ru_utime + after.ru_stime) - (
                        before.ru_utime + before.ru_stime
                    )
                    runs[reliability].append(result)
            best = {k: max(v, key=lambda r: r["fps"]) for k, v in runs.items()}
            for reliability, name in ((False, "without"), (True, "with")):
                bench.report(f"{label}, {name} voice/audio_share", best[reliability])
            ratio = best[True]["fps"] / best[False]["fps"]
            cpu = {k: min(r["cpu_s"] for r in v) for k, v in runs.items()}
            head = {k: min(r["stages_s"].get("head", 0.0) for r in v) for k, v in runs.items()}
            voice = min(r["stages_s"].get("voice", 0.0) for r in runs[True])
            added = voice + head[True] - head[False]
            seconds = min(r["frames"] / r["fps"] for r in runs[False])
            print(
                f"{label}: with the reliability columns at {ratio:.0%} of the speed (wall clock); "
                f"CPU {cpu[True]:.1f} vs {cpu[False]:.1f} s ({cpu[False] / cpu[True]:.0%}); "
                f"added stages {added:.2f} s (voice {voice:.2f}, "
                f"head +{head[True] - head[False]:.2f})"
                f" = {added / seconds:.1%} of the fastest run without",
                flush=True,
            )


if __name__ == "__main__":
    main()
