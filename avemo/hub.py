"""Named weights: the manifest, the download cache, verified pulls, and name resolution.

The manifest (``weights/manifest.json``, installed as ``avemo.weights``) lists every published
checkpoint avemo knows: what it is, where it comes from, and its sha256 when known. ``pull``
downloads a named file into the cache (``$AVEMO_HOME``, else ``$XDG_CACHE_HOME/avemo``, else
``~/.cache/avemo``) as ``<cache>/weights/<name>/<file>``: streamed through a ``.part`` file that
survives interruptions (the next pull resumes it with an HTTP Range request), verified, then
renamed into place. Nothing unverifiable is used: a file whose sha256 the manifest does not give is
only downloaded with ``trust=True``, and the hash seen then is recorded in ``<cache>/state.json``
so that later checks compare against it. ``resolve`` turns a name or a path into a file for the
other commands (``annotate --model NAME``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import difflib
import http.client
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from avemo import __version__
from avemo.errors import AvemoError
from avemo.files import atomic_path, sha256_file
from avemo.weights import DIRECTORY

log = logging.getLogger("avemo")

MANIFEST_PATH = Path(str(DIRECTORY / "manifest.json"))
MANIFEST_FORMAT = 1
STATE_FILE = "state.json"  # in the cache: hashes recorded with --trust and verification stamps
CHUNK_SIZE = 1 << 20  # bytes per read while downloading
DEFAULT_TIMEOUT = 30.0  # s, for connecting and for each read
DEFAULT_RETRIES = 3  # resumptions after a connection dropped mid-file, per URL

COMPONENTS = frozenset(
    {"visual_backbone", "audio_backbone", "backbones", "head", "pipeline", "expression"}
)
IMPORT_FORMATS = frozenset({"tsav", "pytorch-i3d", "jca-cvpr", "jca-journal", "jmt", "torchvision"})
REQUIRED_KEYS = (
    "name",
    "component",
    "file",
    "bundled",
    "size",
    "sha256",
    "licence",
    "urls",
    "source",
    "matches",
    "import_format",
    "notes",
)
OPTIONAL_KEYS = ("sha256_prefix",)
_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA256_PREFIX = re.compile(r"^[0-9a-f]{8,63}$")


@dataclass(frozen=True)
class Weights:
    """One manifest entry. ``size``/``sha256`` describe the file as downloaded (None: unknown)."""

    name: str
    component: str
    file: str
    bundled: bool
    size: int | None
    sha256: str | None
    licence: str
    urls: tuple[str, ...]
    source: str
    matches: str
    import_format: str | None
    notes: str
    sha256_prefix: str | None = None  # a known prefix of the sha256 (torchvision file names)

    @property
    def path(self) -> Path:
        """Where the file lives: inside the installed package if bundled, else in the cache."""
        if self.bundled:
            return Path(str(DIRECTORY / self.file))
        return cache_dir() / "weights" / self.name / self.file

    @property
    def part_path(self) -> Path:
        """The partial download kept for resuming."""
        return self.path.with_name(self.path.name + ".part")

    def manual_way(self) -> str:
        """One sentence telling a user without avemo's network access how to install the file."""
        check = f"avemo weights verify {self.name}" + ("" if self.sha256 else " --trust")
        if self.urls:
            get_it = f"download {self.urls[0]}"
        else:
            get_it = f"obtain the file (no public download; `avemo weights info {self.name}`)"
        return f"{get_it} and save it as {self.path}, then run `{check}`"


# --- manifest ----------------------------------------------------------------------------------


def load_manifest(path: str | os.PathLike | None = None) -> dict[str, Weights]:
    """Read and validate a manifest; entries by name, in file order."""
    path = Path(path) if path is not None else MANIFEST_PATH
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AvemoError("weights manifest not found", path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AvemoError(f"unreadable weights manifest: {error}", path) from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise AvemoError(f"not a format-{MANIFEST_FORMAT} avemo weights manifest", path)
    if not isinstance(data.get("weights"), list):
        raise AvemoError("the manifest has no 'weights' list", path)
    entries: dict[str, Weights] = {}
    for index, raw in enumerate(data["weights"]):
        entry = _parse_entry(raw, f"entry {index}", path)
        if entry.name in entries:
            raise AvemoError(f"duplicate weights name {entry.name!r}", path)
        entries[entry.name] = entry
    return entries


def _parse_entry(raw: object, where: str, path: Path) -> Weights:
    def bad(message: str) -> AvemoError:
        return AvemoError(f"{where}: {message}", path)

    if not isinstance(raw, dict):
        raise bad("not an object")
    where = f"{where} ({raw.get('name', '?')})"
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        raise bad(f"missing keys: {', '.join(missing)}")
    unknown = sorted(set(raw) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise bad(f"unknown keys: {', '.join(unknown)}")
    for key in ("name", "file", "licence", "source", "matches", "notes"):
        if not isinstance(raw[key], str) or not raw[key]:
            raise bad(f"{key!r} must be a non-empty string")
    if not _NAME.match(raw["name"]):
        raise bad("'name' must be lower-case letters, digits, '.' and '-'")
    if "/" in raw["file"] or "\\" in raw["file"] or raw["file"] in {".", ".."}:
        raise bad("'file' must be a plain file name")
    if raw["component"] not in COMPONENTS:
        raise bad(f"'component' must be one of {', '.join(sorted(COMPONENTS))}")
    if not isinstance(raw["bundled"], bool):
        raise bad("'bundled' must be true or false")
    size = raw["size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise bad("'size' must be a positive number of bytes or null")
    sha = raw["sha256"]
    if sha is not None and not (isinstance(sha, str) and _SHA256.match(sha)):
        raise bad("'sha256' must be 64 lower-case hex digits or null")
    prefix = raw.get("sha256_prefix")
    if prefix is not None and not (isinstance(prefix, str) and _SHA256_PREFIX.match(prefix)):
        raise bad("'sha256_prefix' must be 8 to 63 lower-case hex digits")
    if sha is not None and prefix is not None and not sha.startswith(prefix):
        raise bad("'sha256' does not start with 'sha256_prefix'")
    urls = raw["urls"]
    if not isinstance(urls, list) or not all(
        isinstance(u, str) and urllib.parse.urlsplit(u).scheme in {"http", "https"} for u in urls
    ):
        raise bad("'urls' must be a list of http(s) URLs")
    if raw["bundled"] and urls:
        raise bad("a bundled entry has no URLs")
    fmt = raw["import_format"]
    if fmt is not None and fmt not in IMPORT_FORMATS:
        raise bad(f"'import_format' must be null or one of {', '.join(sorted(IMPORT_FORMATS))}")
    if sha is None and "unknown" not in raw["notes"].lower() and "todo" not in raw["notes"].lower():
        raise bad("an entry without sha256 must say in 'notes' that the hash is unknown")
    return Weights(
        name=raw["name"],
        component=raw["component"],
        file=raw["file"],
        bundled=raw["bundled"],
        size=size,
        sha256=sha,
        licence=raw["licence"],
        urls=tuple(urls),
        source=raw["source"],
        matches=raw["matches"],
        import_format=fmt,
        notes=raw["notes"],
        sha256_prefix=prefix,
    )


def get(name: str, manifest: Mapping[str, Weights] | None = None) -> Weights:
    """The manifest entry called ``name``; an unknown name suggests close ones."""
    manifest = load_manifest() if manifest is None else manifest
    if name in manifest:
        return manifest[name]
    close = difflib.get_close_matches(name, list(manifest), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise AvemoError(f"unknown weights {name!r}: {hint}`avemo weights list` shows them all")


# --- cache -------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$AVEMO_HOME``, else ``$XDG_CACHE_HOME/avemo``, else ``~/.cache/avemo``."""
    if os.environ.get("AVEMO_HOME"):
        return Path(os.environ["AVEMO_HOME"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "avemo"
    return Path.home() / ".cache" / "avemo"


def load_state() -> dict[str, dict]:
    """The cache's own records, by name: ``sha256``, ``size``, ``mtime_ns``, ``trusted``, ..."""
    path = cache_dir() / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        message = f"unreadable cache state ({error}); delete it to start over"
        raise AvemoError(message, path) from None
    return state if isinstance(state, dict) else {}


def _save_record(entry: Weights, sha256: str, *, trusted: bool, url: str | None = None) -> None:
    stat = entry.path.stat()
    state = load_state()
    old = state.get(entry.name, {})
    state[entry.name] = {
        "file": entry.file,
        "sha256": sha256,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "trusted": trusted or (old.get("trusted", False) and old.get("sha256") == sha256),
        "url": url or old.get("url"),
        "recorded": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    with atomic_path(cache_dir() / STATE_FILE) as tmp:
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def expected_sha256(entry: Weights, state: Mapping[str, dict] | None = None) -> str | None:
    """The hash a file must have: the manifest's, else one recorded earlier with --trust."""
    if entry.sha256:
        return entry.sha256
    record = (load_state() if state is None else state).get(entry.name, {})
    return record.get("sha256") if record.get("trusted") else None


def status(entry: Weights) -> str:
    """``bundled``, ``missing`` (bundled file absent), ``cached``, ``partial`` or ``absent``."""
    if entry.bundled:
        return "bundled" if entry.path.is_file() else "missing"
    if entry.path.is_file():
        return "cached"
    return "partial" if entry.part_path.is_file() else "absent"


# --- download ----------------------------------------------------------------------------------


class _Cut(Exception):
    """The connection dropped or stalled mid-file; the ``.part`` file is kept for resuming."""


class _Failed(Exception):
    """This URL cannot deliver the file (unreachable, HTTP error, a web page instead)."""


class _RangeRefused(_Failed):
    """HTTP 416: the partial file does not fit what the server has; start over."""


def _unreachable(url: str, reason: object) -> _Failed:
    host = urllib.parse.urlsplit(url).hostname
    return _Failed(f"cannot reach {host} (offline? {reason})")


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": f"avemo/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and offset:
            raise _RangeRefused(f"HTTP 416 for bytes {offset}- of {url}") from None
        raise _Failed(f"HTTP {error.code} {error.reason} from {url}") from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise _Failed(f"no answer from {url} within {timeout:g} s") from None
        raise _unreachable(url, error.reason) from None
    except TimeoutError:
        raise _Failed(f"no answer from {url} within {timeout:g} s") from None
    except (ConnectionError, http.client.HTTPException, OSError) as error:
        raise _unreachable(url, error) from None


def _content_range_start(response: http.client.HTTPResponse) -> tuple[int, int | None] | None:
    """(start, total) from a 206's ``Content-Range: bytes START-END/TOTAL``."""
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
    if not match:
        return None
    return int(match[1]), None if match[2] == "*" else int(match[2])


def _fetch(entry: Weights, url: str, *, timeout: float, progress: bool | None) -> None:
    """Bring ``entry.part_path`` to the complete file from ``url``, resuming what is there."""
    part = entry.part_path
    offset = part.stat().st_size if part.exists() else 0
    if entry.size is not None and offset >= entry.size:
        if offset == entry.size:
            return  # complete already (interrupted before the rename); the hash decides
        part.unlink()
        offset = 0
    try:
        response = _open(url, offset, timeout)
    except _RangeRefused:
        part.unlink()
        offset = 0
        response = _open(url, 0, timeout)
    with response:
        if response.headers.get_content_type() == "text/html":
            raise _Failed(
                f"{url} answered with a web page, not the file (a file host asking for a "
                "confirmation or a login)"
            )
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if offset and response.status == 206:
            start, total = _content_range_start(response) or (None, None)
            if start != offset:
                raise _Failed(f"{url} resumed at the wrong offset ({start}, expected {offset})")
        else:
            offset, total = 0, length
        if entry.size is not None and total is not None and total != entry.size:
            raise _Failed(f"{url} serves {total} bytes, the manifest says {entry.size}")
        with (
            open(part, "ab" if offset else "wb") as out,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=entry.name,
                disable=None if progress is None else not progress,
                leave=False,
            ) as bar,
        ):
            received = offset
            try:
                while chunk := response.read1(CHUNK_SIZE):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    if entry.size is not None and received > entry.size:
                        out.close()
                        part.unlink()
                        raise _Failed(f"{url} sent more than the {entry.size} bytes expected")
            except TimeoutError:
                raise _Cut(f"no data for {timeout:g} s") from None
            except (http.client.IncompleteRead, ConnectionError, OSError) as error:
                raise _Cut(f"connection lost ({type(error).__name__})") from None
        if total is not None and received < total:
            raise _Cut(f"connection closed after {received} of {total} bytes")


@contextlib.contextmanager
def _exclusive(entry: Weights) -> Iterator[None]:
    """Hold a lock file so that two processes never write the same download.

    The lock file is removed when the pull ends, whether it succeeded or failed. Removing it
    while holding the lock is safe because a process that locks the file checks that the name
    still leads to the file it locked (else it opened a lock already removed, and tries again).
    """
    entry.path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = entry.path.with_name(entry.path.name + ".lock")
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks, concurrent pulls are the user's care
        yield
        return
    while True:
        lock = open(lock_path, "w")  # closed below: after the unlink when it is ours
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise AvemoError(
                f"another avemo process is downloading {entry.name}; wait for it", entry.path
            ) from None
        try:
            current = os.stat(lock_path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(lock.fileno()).st_ino:
            break
        lock.close()  # removed (and maybe re-created) by the holder we waited for: again
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            lock_path.unlink()
        lock.close()  # releases the lock


def _check_file(entry: Weights, path: Path, expected: str | None) -> str:
    """Hash ``path`` and compare with what is known; raise AvemoError (naming it) if it differs."""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        raise AvemoError(f"size {size} bytes, expected {entry.size}", path)
    digest = sha256_file(path)
    if expected and digest != expected:
        raise AvemoError(f"sha256 {digest}, expected {expected}", path)
    if entry.sha256_prefix and not digest.startswith(entry.sha256_prefix):
        raise AvemoError(f"sha256 {digest} does not start with {entry.sha256_prefix}", path)
    return digest


def pull(
    name: str,
    *,
    trust: bool = False,
    manifest: Mapping[str, Weights] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    progress: bool | None = None,
) -> Path:
    """Download the named weights into the cache (if not there and valid yet); return the path.

    Verifies the sha256 (a mismatch deletes the file and raises). An entry without a known hash
    needs ``trust=True``: its hash is then recorded and checked from then on. A dropped
    connection is resumed up to ``retries`` times; what arrived stays in a ``.part`` file that the
    next call resumes. ``progress=None`` shows a bar only on a terminal.
    """
    entry = get(name, manifest)
    if entry.bundled:
        if not entry.path.is_file():
            raise AvemoError(f"{name} should be bundled with avemo: reinstall it", entry.path)
        return entry.path
    expected = expected_sha256(entry)
    with _exclusive(entry):
        if entry.path.is_file():
            if expected or trust:
                try:
                    digest = _check_file(entry, entry.path, expected)
                except AvemoError as error:
                    log.warning("%s; downloading it again", error)
                    entry.path.unlink()
                else:
                    _save_record(entry, digest, trusted=not entry.sha256)
                    return entry.path
            else:
                raise AvemoError(
                    f"{name} is present but has no known sha256: check where it came from, then "
                    f"`avemo weights verify {name} --trust` records its hash",
                    entry.path,
                )
        if not entry.urls:
            raise AvemoError(f"{name} has no public download: {entry.manual_way()}")
        if not expected and not trust:
            raise AvemoError(
                f"{name} has no published sha256, so avemo cannot verify it: run "
                f"`avemo weights pull {name} --trust` to download it and record its hash"
            )
        failures = []
        for url in entry.urls:
            try:
                _fetch_with_retries(entry, url, timeout=timeout, retries=retries, progress=progress)
            except _Failed as failure:
                failures.append(str(failure))
                continue
            part = entry.part_path
            try:
                digest = _check_file(entry, part, expected)
            except AvemoError as error:
                part.unlink(missing_ok=True)
                why = f"{error.message}: deleted it; the download is not {name}"
                if expected and not entry.sha256:
                    why += (
                        f" (expected: the hash recorded when you trusted it; remove {name!r} "
                        f"from {cache_dir() / STATE_FILE} to trust a new file)"
                    )
                raise AvemoError(why, url) from None
            os.replace(part, entry.path)
            _save_record(entry, digest, trusted=not entry.sha256, url=url)
            if not expected:
                log.warning("%s: recorded sha256 %s (trusted, not verified)", name, digest)
            return entry.path
        raise AvemoError(
            f"cannot download {name}: {'; '.join(failures)}. Manual way: {entry.manual_way()}"
        )


def _fetch_with_retries(
    entry: Weights, url: str, *, timeout: float, retries: int, progress: bool | None
) -> None:
    for attempt in range(retries + 1):
        try:
            _fetch(entry, url, timeout=timeout, progress=progress)
            return
        except _Cut as cut:
            kept = entry.part_path.stat().st_size if entry.part_path.exists() else 0
            if attempt == retries:
                raise AvemoError(
                    f"download of {entry.name} interrupted ({cut}); {kept} bytes kept in "
                    f"{entry.part_path}: run the same command again to resume",
                    url,
                ) from None
            log.warning("%s: %s; resuming from byte %d", entry.name, cut, kept)


# --- verify and resolve ------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """The outcome of verifying one entry.

    Passing: ``ok``, ``recorded`` (hash recorded with --trust), ``bundled`` (installed with avemo,
    no hash in the manifest). Failing: ``absent``, ``unverified`` (no hash known), ``mismatch``.
    """

    name: str
    state: str
    path: Path
    message: str

    @property
    def failed(self) -> bool:
        return self.state in {"mismatch", "absent", "unverified"}


def verify(
    name: str | None = None,
    *,
    trust: bool = False,
    manifest: Mapping[str, Weights] | None = None,
) -> list[Check]:
    """Hash the named file (or every bundled and cached one) against the known sha256.

    With ``trust``, a present file whose hash nothing records gets its hash recorded.
    A mismatch is reported, not deleted (``pull`` replaces it).
    """
    manifest = load_manifest() if manifest is None else manifest
    entries = [get(name, manifest)] if name else list(manifest.values())
    checks = []
    state = load_state()
    for entry in entries:
        path = entry.path
        if not path.is_file():
            if name:
                checks.append(Check(entry.name, "absent", path, entry.manual_way()))
            continue
        expected = expected_sha256(entry, state)
        try:
            digest = _check_file(entry, path, expected)
        except AvemoError as error:
            checks.append(
                Check(
                    entry.name,
                    "mismatch",
                    path,
                    f"{error.message}: `avemo weights pull {entry.name}` downloads it again",
                )
            )
            continue
        if expected:
            if not entry.bundled:
                _save_record(entry, digest, trusted=not entry.sha256)
            checks.append(Check(entry.name, "ok", path, f"sha256 {digest}"))
        elif trust and not entry.bundled:
            _save_record(entry, digest, trusted=True)
            checks.append(Check(entry.name, "recorded", path, f"recorded sha256 {digest}"))
        elif entry.bundled:
            checks.append(Check(entry.name, "bundled", path, f"sha256 {digest} (not in manifest)"))
        else:
            hint = f"`avemo weights verify {entry.name} --trust` records it"
            checks.append(
                Check(entry.name, "unverified", path, f"no known sha256 (has {digest}): {hint}")
            )
    return checks


def resolve(name_or_path: str | os.PathLike, manifest: Mapping[str, Weights] | None = None) -> Path:
    """A weights file for other commands: an existing path, a bundled file or a verified cached one.

    A cached file is re-hashed only when its size or modification time changed since it was last
    verified. A name not pulled yet raises an error saying ``avemo weights pull NAME``.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    text = os.fspath(name_or_path)
    manifest = load_manifest() if manifest is None else manifest
    if text not in manifest:
        if os.sep in text or "/" in text or Path(text).suffix:
            raise AvemoError("weights file not found", path)
        get(text, manifest)  # raises, with suggestions
    entry = manifest[text]
    if entry.bundled:
        if not entry.path.is_file():
            raise AvemoError(f"{entry.name} should be bundled with avemo: reinstall it", entry.path)
        return entry.path
    if not entry.path.is_file():
        how = f"run `avemo weights pull {entry.name}`" if entry.urls else entry.manual_way()
        raise AvemoError(f"weights {entry.name} are not downloaded yet: {how}")
    state = load_state()
    expected = expected_sha256(entry, state)
    if not expected:
        raise AvemoError(
            f"{entry.name} has no known sha256: `avemo weights verify {entry.name} --trust` "
            "records the hash of the file you have",
            entry.path,
        )
    record = state.get(entry.name, {})
    stat = entry.path.stat()
    if (
        record.get("sha256") == expected
        and record.get("size") == stat.st_size
        and record.get("mtime_ns") == stat.st_mtime_ns
    ):
        return entry.path
    try:
        digest = _check_file(entry, entry.path, expected)
    except AvemoError as error:
        raise AvemoError(
            f"{error.message}: corrupt; `avemo weights pull {entry.name}` downloads it again",
            entry.path,
        ) from None
    _save_record(entry, digest, trusted=not entry.sha256)
    return entry.path


def describe(entry: Weights) -> dict[str, object]:
    """The entry's fields plus where it lives and its cache state, for ``avemo weights info``."""
    info = dataclasses.asdict(entry)
    info["urls"] = list(entry.urls)
    info["path"] = str(entry.path)
    info["status"] = status(entry)
    record = load_state().get(entry.name)
    if record:
        info["recorded"] = record
    return info
