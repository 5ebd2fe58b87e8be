"""A real two-node Ray cluster on this machine for tests/test_cluster.py and benchmarks/ray.py.

``ray start --head`` and ``ray start --address`` (each node 1 CPU), with token authentication
(Ray 2.60: ``RAY_AUTH_MODE=token`` in every Ray process and driver, the token itself in
``RAY_AUTH_TOKEN``; a random one per cluster, so ``~/.ray/auth_token`` is never written) and a
private temp dir and ports, so that it does not meet any other Ray on the machine.
:meth:`Cluster.stop` kills exactly the processes of this cluster (those whose command line names
its temp dir, and their descendants: raylet workers), never ``ray stop``, which would stop every
Ray on the machine.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OBJECT_STORE_BYTES = 100_000_000  # the least Ray accepts is 75 MB; the tests move no data


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        found[int(entry.name)] = (parent, args)
    return found


class Cluster:
    """Head + one worker node, 1 CPU each; ``env`` is what a driver needs (address, token)."""

    def __init__(self, cpus_per_node: int = 1, nodes: int = 2, worker_imports: tuple = ()):
        """``worker_imports``: modules of tests/ that every Ray worker imports when it starts
        (``tiny``: the tests' tiny backbones, registered in the worker's model registry)."""
        self.temp = tempfile.mkdtemp(prefix="avemo-ray-")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.env.pop("RAY_ADDRESS", None)
        if worker_imports:
            hook = Path(self.temp) / "hook"
            hook.mkdir()
            tests = str(Path(__file__).resolve().parent)
            (hook / "sitecustomize.py").write_text(
                "import sys\n"
                "if any(arg.endswith('default_worker.py') for arg in sys.argv):\n"
                f"    sys.path.insert(0, {tests!r})\n"
                + "".join(f"    import {name}  # noqa: F401\n" for name in worker_imports)
            )
            self.env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(hook), self.env.get("PYTHONPATH")])
            )
        ray = str(Path(sys.executable).parent / "ray")
        common = [
            f"--num-cpus={cpus_per_node}",
            "--num-gpus=0",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            "--disable-usage-stats",
        ]
        try:
            self._run(
                [ray, "start", "--head", f"--port={self.port}", "--node-ip-address=127.0.0.1",
                 "--include-dashboard=false", f"--dashboard-port={free_port()}",
                 f"--dashboard-agent-listen-port={free_port()}",
                 f"--temp-dir={self.temp}", *common]
            )  # fmt: skip
            for _ in range(nodes - 1):
                self._run(
                    [ray, "start", f"--address={self.address}", "--node-ip-address=127.0.0.1",
                     f"--dashboard-agent-listen-port={free_port()}", *common]
                )  # fmt: skip
        except BaseException:
            self.stop()
            raise

    def _run(self, command: list[str]) -> None:
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=120)
        if result.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")

    def pids(self) -> set[int]:
        """This cluster's processes: those naming its temp dir and all their descendants."""
        table = _processes()
        mine = {pid for pid, (_, args) in table.items() if self.temp in args}
        grew = True
        while grew:
            more = {pid for pid, (parent, _) in table.items() if parent in mine} - mine
            mine |= more
            grew = bool(more)
        mine.discard(os.getpid())
        return mine

    def workers(self, name: str = "") -> list[int]:
        """Ray worker processes (``ray::<name>...`` command lines) of this cluster."""
        table = _processes()
        return sorted(
            pid
            for pid in self.pids()
            if pid in table and table[pid][1].startswith(f"ray::{name}")
        )

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + (3 if sig == signal.SIGTERM else 10)
            while pids and time.monotonic() < deadline:
                pids = {pid for pid in pids if Path(f"/proc/{pid}").exists()}
                pids = {pid for pid in pids if "zombie" not in _state(pid)}
                time.sleep(0.2)
            if not pids:
                break
        subprocess.run(["rm", "-rf", self.temp], check=False)


def _state(pid: int) -> str:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "zombie"
    return "zombie" if state == "Z" else ""
