"""Run a batch on a Ray cluster (``--ray ADDRESS``): one Ray task per video.

:func:`avemo.batch.run_batch` calls a command's per-job function for every video that is not
done yet; with a :class:`RayExecutor` it sends that same function (a picklable
``functools.partial`` of a module-level function) to the cluster instead of calling it here.
Nothing else changes: workers write the same ``OUT/<rel>/...`` files with the same atomic
writes (so OUT must be a path that every node mounts), the driver decides what is skipped,
prints the error lines and the summary, and shows one progress bar over videos.

* **Resources.** Each task asks for ``cpus_per_video`` CPUs and ``gpus_per_video`` GPUs; without
  ``gpus_per_video`` the GPUs follow ``--device``: 0 for ``cpu``, 1 for ``cuda``, and for
  ``auto`` 1 if the cluster has GPUs, else 0. A fraction (0.25) lets 4 videos share a GPU.
* **Models load once per worker process.** Tasks run in Ray's reused worker processes
  (``max_calls=0``, also for GPU tasks, where Ray's default would start a fresh process per
  task), so the per-process caches of the commands (annotate's model and detector, faces'
  detector, extract's backbones) load a model once per process, not once per video. Every task
  reports its process id and that process's load counts (:attr:`RayExecutor.stats`).
* **Failures.** A video that raises is one error line, as locally (never retried: the same
  input fails the same way). A worker process or node that dies mid-video (killed, out of
  memory, preempted) is a system failure: Ray runs the task again, on any node, up to
  ``retries`` times. Writes are atomic, so a dead attempt leaves no output under its final
  name; :func:`avemo.batch.run_batch` removes its hidden temporary files.

``ray`` is imported only here, and only when a batch runs with an address: without ``--ray``
nothing about Ray is imported (tests/test_cluster.py checks it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from avemo.batch import Job, describe_error
from avemo.errors import AvemoError

DEFAULT_RETRIES = 3  # extra attempts of a video whose worker or node died
DEFAULT_CPUS_PER_VIDEO = 1.0
INSTALL_HINT = 'Ray is not installed: pip install -c constraints.txt "avemo[ray]"'


def _import_ray():
    try:
        import ray
    except ImportError:
        raise AvemoError(f"--ray: {INSTALL_HINT}") from None
    return ray


def connect(address: str = "auto"):
    """Connect this process to Ray and return the ``ray`` module.

    ``auto``: the cluster in ``RAY_ADDRESS``, else a local Ray started for this run (stopped at
    exit); ``HOST:PORT``: an existing cluster's GCS address; ``ray://HOST:PORT``: Ray Client.
    A cluster with token authentication needs the same ``RAY_AUTH_MODE=token`` and token
    (``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``) in this process's environment.
    """
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    address = str(address).strip()
    if not address:
        raise AvemoError("--ray: empty address (auto, HOST:PORT or ray://HOST:PORT)")
    target = (os.environ.get("RAY_ADDRESS") or None) if address == "auto" else address
    kwargs = {"log_to_driver": False, "logging_level": "ERROR"}
    if target is None:  # a local Ray for this run only
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=target, **kwargs)
    except Exception as error:  # ConnectionError, RuntimeError, ValueError, auth errors, ...
        where = target or "a local Ray"
        raise AvemoError(f"--ray: cannot connect to {where}: {describe_error(error)}") from None
    return ray


def gpus_for(device: str, gpus_per_video: float | None, cluster_gpus: float) -> float:
    """GPUs one video asks for: ``gpus_per_video``, else what ``device`` implies."""
    device = str(device).strip().lower()
    if device.startswith("cuda:"):
        raise AvemoError(
            "--device cuda:N picks a GPU of this machine; on Ray each task gets the GPU Ray "
            "assigns it: use --device cuda (or auto) and --gpus-per-video"
        )
    if gpus_per_video is not None:
        gpus = float(gpus_per_video)
        if gpus < 0:
            raise AvemoError("--gpus-per-video must be >= 0")
        if gpus > 0 and device == "cpu":
            raise AvemoError("--gpus-per-video > 0 with --device cpu: pick one")
        if gpus > 1 and gpus != int(gpus):
            raise AvemoError("--gpus-per-video above 1 must be a whole number")
        return gpus
    if device == "cpu":
        return 0.0
    if device == "cuda":
        return 1.0
    return 1.0 if cluster_gpus > 0 else 0.0


def _run_job(process: Callable[[Job], object], job: Job) -> tuple[str | None, dict]:
    """On a worker: run one job; return its error line (None: done) and this process's stats."""
    try:
        stats = process(job)
        line = None
    except Exception as error:  # reported by the driver, like a local failure
        line = describe_error(error)
        stats = None
    stats = dict(stats) if isinstance(stats, dict) else {}
    stats.update(pid=os.getpid(), node=os.uname().nodename)
    return line, stats


@dataclass
class RayExecutor:
    """Runs :func:`avemo.batch.run_batch`'s jobs as Ray tasks (see the module docstring)."""

    address: str = "auto"
    device: str = "auto"
    gpus_per_video: float | None = None
    cpus_per_video: float = DEFAULT_CPUS_PER_VIDEO
    retries: int = DEFAULT_RETRIES
    progress: bool = True
    stats: dict[int, dict] = field(default_factory=dict)  # worker pid -> its latest stats

    def __post_init__(self) -> None:
        if self.cpus_per_video <= 0:
            raise AvemoError("--cpus-per-video must be > 0")
        if self.retries < 0:
            raise AvemoError("--retries must be >= 0")
        self.ray = connect(self.address)
        gpus = self.ray.cluster_resources().get("GPU", 0.0)
        self.gpus = gpus_for(self.device, self.gpus_per_video, gpus)
        if self.gpus > gpus:
            raise AvemoError(
                f"--ray: each video asks for {self.gpus:g} GPU; the cluster has {gpus:g}"
            )
        cpus = self.ray.cluster_resources().get("CPU", 0.0)
        if self.cpus_per_video > cpus:
            raise AvemoError(
                f"--cpus-per-video {self.cpus_per_video:g}: the cluster has {cpus:g} CPUs"
            )

    def map(
        self, process: Callable[[Job], object], jobs: Iterable[Job]
    ) -> Iterator[tuple[Job, str | None]]:
        """Yield ``(job, error line or None)`` for every job, as the tasks finish."""
        from tqdm import tqdm

        ray = self.ray
        jobs = list(jobs)
        task = ray.remote(max_calls=0)(_run_job).options(  # max_calls: 0 = reuse processes
            num_cpus=self.cpus_per_video,
            num_gpus=self.gpus,
            max_retries=self.retries,
            retry_exceptions=False,
        )
        shared = ray.put(process)  # serialised once, not once per video
        pending = {task.remote(shared, job): job for job in jobs}
        bar = tqdm(total=len(jobs), unit="video", disable=not self.progress or len(jobs) < 2)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    job = pending.pop(ref)
                    try:
                        line, stats = ray.get(ref)
                    except ray.exceptions.RayTaskError as error:  # the task itself, not run
                        cause = getattr(error, "cause", None) or error  # e.g. no avemo there
                        line = f"on the Ray worker: {describe_error(cause)}"
                    except ray.exceptions.RayError as error:  # the worker or its node died
                        line = (
                            f"the Ray worker running it died {self.retries + 1} time(s): "
                            f"{describe_error(error)}"
                        )
                    else:
                        # merged: a failed job reports no load counts, so it must not erase
                        # those of the good jobs this process ran before
                        self.stats.setdefault(stats["pid"], {}).update(stats)
                    bar.update()
                    yield job, line
        finally:
            bar.close()
            for ref in pending:  # interrupted: stop what is still queued or running
                ray.cancel(ref, force=True)

    def loads(self) -> dict[str, int]:
        """Total model loads over the worker processes that ran jobs (``*_loads`` stats)."""
        total: dict[str, int] = {}
        for stats in self.stats.values():
            for key, value in stats.items():
                if key.endswith("_loads"):
                    total[key] = total.get(key, 0) + int(value)
        return total


def executor(
    ray: str | None,
    *,
    device: str = "auto",
    gpus_per_video: float | None = None,
    cpus_per_video: float | None = None,
    retries: int | None = None,
    progress: bool = True,
) -> RayExecutor | None:
    """The executor for a command's ``ray=`` option: None (run here) without an address."""
    if ray is None:
        if gpus_per_video is not None or cpus_per_video is not None or retries is not None:
            raise AvemoError("--gpus-per-video, --cpus-per-video and --retries need --ray")
        return None
    return RayExecutor(
        str(ray),
        device=device,
        gpus_per_video=gpus_per_video,
        cpus_per_video=DEFAULT_CPUS_PER_VIDEO if cpus_per_video is None else cpus_per_video,
        retries=DEFAULT_RETRIES if retries is None else int(retries),
        progress=progress and sys.stderr is not None,
    )
