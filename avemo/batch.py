"""Batch runs over many videos: input discovery, output paths, skipping, atomic writes.

Every batch command (``faces``, ``annotate``, ``extract``) follows the same rules: inputs are any
mix of files and folders (folders searched recursively by video extension), the input
``<root>/<rel>/<stem>.<ext>`` maps to ``OUT/<rel>/<stem><suffix>``, existing outputs are skipped
unless ``overwrite``, every output is written to a temporary file and renamed into place, and one
failing file never stops the others. Jobs run here, one after the other, or through an executor
(:mod:`avemo.cluster`: Ray tasks) that runs the same per-job function elsewhere.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from avemo.errors import AvemoError

log = logging.getLogger("avemo")

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .avi .mkv .webm .mpg .mpeg .wmv .flv .3gp .ts .mts .m2ts .ogv .gif".split()
)


@dataclass(frozen=True)
class Job:
    """One input file and where its outputs go (``output_stem`` + a command's suffix)."""

    source: Path
    relative: Path  # path of the source relative to the folder it was found in (or its name)
    output_stem: Path  # OUT/<rel>/<stem>

    def output(self, suffix: str) -> Path:
        return self.output_stem.with_name(self.output_stem.name + suffix)


def safe_stem(name: str) -> str:
    """The output stem of an input file name: its stem, with every leading dot made ``_``.

    A stem that is empty, ``.``, ``..`` or hidden (``..mp4``, ``...mp4``, ``.clip.mp4``) would
    otherwise name the output folder itself, its parent, or a hidden file: ``..mp4`` -> ``_``,
    ``.clip.mp4`` -> ``_clip``. Every other stem is kept as it is.
    """
    stem = Path(name).stem if Path(name).suffix else name
    bare = stem.lstrip(".")
    return "_" * (len(stem) - len(bare)) + bare if stem.startswith(".") or not stem else stem


def find_jobs(inputs: Iterable[str | os.PathLike], output_dir: str | os.PathLike) -> list[Job]:
    """Expand files and folders into jobs, in a stable order, without duplicates.

    A path that does not exist still becomes a job, so that it is reported as a failed file
    like any other unreadable input instead of stopping the batch. Output stems are
    ``OUT/<rel>/<safe_stem>`` and always inside ``OUT``.
    """
    output_dir = Path(output_dir)
    jobs: dict[Path, Job] = {}
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found = sorted(
                p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
            )
            pairs = [(p, p.relative_to(item)) for p in found]
        else:
            pairs = [(item, Path(item.name))]
        for source, relative in pairs:
            key = source.resolve()
            if key not in jobs:
                stem = output_dir / relative.parent / safe_stem(relative.name)
                jobs[key] = Job(source, relative, stem)
    return list(jobs.values())


def check_collisions(jobs: Iterable[Job], describe=lambda job: str(job.source)) -> None:
    """Refuse (one usage error listing them) inputs that would write the same outputs, e.g.
    ``a/clip.mp4 b/clip.mp4`` given as files, or ``clip.mp4`` and ``clip.avi`` in one folder."""
    by_stem: dict[Path, list[Job]] = {}
    for job in jobs:
        by_stem.setdefault(job.output_stem, []).append(job)
    clashes = [group for group in by_stem.values() if len(group) > 1]
    if clashes:
        shown = "; ".join(" and ".join(describe(j) for j in group) for group in clashes[:5])
        more = f" (and {len(clashes) - 5} more groups)" if len(clashes) > 5 else ""
        raise AvemoError(
            f"{sum(map(len, clashes))} inputs would write the same outputs: {shown}{more}. "
            "Rename them, or give one folder that holds them (OUT keeps each file's path "
            "relative to the folder it was found in)"
        )


def check_output(output: str | os.PathLike) -> Path:
    """The output folder, created if needed; a usage error if it is a file or not writable."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise AvemoError("the output folder is a file", output)
    try:
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output):
            pass
    except OSError as error:
        raise AvemoError(
            f"cannot write to the output folder ({error.strerror or error})", output
        ) from None
    return output


def plan(inputs: Iterable[str | os.PathLike], output: str | os.PathLike) -> list[Job]:
    """The jobs of a batch command, checked before any work: the output folder is writable,
    there is at least one input, and no two inputs write the same outputs."""
    inputs = list(inputs)
    jobs = find_jobs(inputs, output)
    if not jobs:
        raise AvemoError(f"no video files in {', '.join(map(str, inputs))}")
    check_collisions(jobs)
    check_output(output)
    return jobs


@dataclass
class BatchResult:
    done: list[Job] = field(default_factory=list)
    skipped: list[Job] = field(default_factory=list)
    failed: list[tuple[Job, str]] = field(default_factory=list)
    seconds: float = 0.0
    workers: dict[int, dict] = field(default_factory=dict)  # an executor's per-process stats

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def summary(self, what: str = "files") -> str:
        return (
            f"{len(self.done)} {what} done, {len(self.skipped)} skipped (output exists), "
            f"{len(self.failed)} failed in {self.seconds:.1f} s"
        )


def describe_error(error: BaseException) -> str:
    """One line for a failure: the avemo message, or the exception type and text."""
    if isinstance(error, AvemoError):
        return str(error)
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else 'unexpected error'}"


def run_batch(
    jobs: list[Job],
    process: Callable[[Job], None],
    *,
    outputs: Callable[[Job], list[Path]],
    overwrite: bool = False,
    stream=None,
    executor=None,
) -> BatchResult:
    """Call ``process(job)`` for each job whose outputs do not all exist yet (or ``overwrite``).

    Failures are reported as one line each on ``stream`` (stderr), prefixed with the source path
    unless the message already names it; set ``AVEMO_DEBUG=1`` to re-raise them instead.
    ``executor``: run ``process`` elsewhere instead of here (an object whose
    ``map(process, jobs)`` yields ``(job, error line or None)`` as jobs finish, e.g.
    :class:`avemo.cluster.RayExecutor`); skipping, reporting and the result are the same.
    """
    stream = stream or sys.stderr
    result = BatchResult()
    start = time.perf_counter()
    pending = []
    for job in jobs:
        if not overwrite and all(p.exists() for p in outputs(job)):
            result.skipped.append(job)
        else:
            pending.append(job)
    for job, line in _local(process, pending) if executor is None else executor.map(
        process, pending
    ):
        if line is None:
            result.done.append(job)
            remove_leftovers(outputs(job))
            continue
        if str(job.source) not in line:
            line = f"{job.source}: {line}"
        print(f"error: {line}", file=stream, flush=True)
        result.failed.append((job, line))
    result.seconds = time.perf_counter() - start
    result.workers = dict(getattr(executor, "stats", {}))
    return result


def _local(process: Callable[[Job], object], jobs: list[Job]):
    """Run the jobs here, one after the other: ``(job, error line or None)`` for each."""
    for job in jobs:
        try:
            process(job)
        except KeyboardInterrupt:
            raise
        except Exception as error:  # one failing file never stops the batch
            if os.environ.get("AVEMO_DEBUG"):
                raise
            yield job, describe_error(error)
        else:
            yield job, None


PART_RANDOM = 8  # characters that tempfile.mkstemp/mkdtemp put between prefix and suffix


def remove_leftovers(paths: Iterable[Path]) -> None:
    """Remove the hidden temporary files (``.<name>.XXXXXXXX.part``, files.atomic_path) that an
    attempt killed mid-write (kill -9, a dead Ray worker) left next to these finished outputs."""
    for path in paths:
        prefix = f".{path.name}."
        for part in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
            if len(part.name) - len(prefix) - len(".part") != PART_RANDOM:
                continue
            if part.is_dir():
                shutil.rmtree(part, ignore_errors=True)
            else:
                part.unlink(missing_ok=True)
