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

The manifest also names *pipelines*: whole models (visual + audio backbone + fusion head) described
as data, by the weights files they are made of, the import options of each, the sequence length L
and the visual features the head reads. ``avemo weights pull PIPELINE`` (:func:`avemo.convert.
pull_pipeline`) pulls the components and imports and assembles them once into
``<cache>/pipelines/<name>/<file>``; this module parses those entries, records the assembled
file's sha256 (with the hashes of the components it was made from) and resolves the name.

``$AVEMO_MANIFEST`` names another manifest file to use instead of the packaged one (a mirror, a
test). File hosts that answer a large file with a confirmation page (Google Drive's "can't scan
this file for viruses") are followed to the file: the page's download form or link is read, as
the ``gdown`` tool does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import difflib
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

from avemo import models
from avemo.download import Cut, Failed, fetch
from avemo.errors import AvemoError, InputError
from avemo.files import atomic_path, cache_dir, sha256_file
from avemo.weights import DIRECTORY

log = logging.getLogger("avemo")

MANIFEST_PATH = Path(str(DIRECTORY / "manifest.json"))
MANIFEST_FORMAT = 1
STATE_FILE = "state.json"  # in the cache: hashes recorded with --trust and verification stamps
DEFAULT_TIMEOUT = 30.0  # s, for connecting and for each read
DEFAULT_RETRIES = 3  # resumptions after a connection dropped mid-file, per URL
MANIFEST_ENV = "AVEMO_MANIFEST"  # another manifest file instead of the packaged one

# what a manifest file may hold: a component, or both backbones of one network (TSAV)
COMPONENTS = models.COMPONENTS | {"backbones"}
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


def manifest_path() -> Path:
    """``$AVEMO_MANIFEST`` if set, else the packaged ``weights/manifest.json``."""
    return Path(os.environ[MANIFEST_ENV]) if os.environ.get(MANIFEST_ENV) else MANIFEST_PATH


def _read_manifest(path: Path) -> dict:
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
    if not isinstance(data.get("pipelines", []), list):
        raise AvemoError("the manifest's 'pipelines' must be a list", path)
    return data


def load_manifest(path: str | os.PathLike | None = None) -> dict[str, Weights]:
    """Read and validate a manifest's weights; entries by name, in file order."""
    path = Path(path) if path is not None else manifest_path()
    data = _read_manifest(path)
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
    from avemo.models.layouts import FORMATS

    if fmt is not None and fmt not in FORMATS:
        raise bad(f"'import_format' must be null or one of {', '.join(FORMATS)}")
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
    known = list(manifest) + [p for p in _pipeline_names() if p not in manifest]
    if name in known:
        raise AvemoError(f"{name} is a pipeline, not a weights file: `avemo weights info {name}`")
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise AvemoError(f"unknown weights {name!r}: {hint}`avemo weights list` shows them all")


# --- pipelines: whole models made of manifest entries --------------------------------------------

PIPELINE_KEYS = ("name", "file", "components", "seq_len", "features", "matches", "notes")
FEATURES = ("pool", "flat")  # the visual backbone's feature modes (avemo.models.backbones)


@dataclass(frozen=True)
class Component:
    """One weights file of a pipeline and the import options it is read with."""

    weights: str
    options: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class Pipeline:
    """A manifest pipeline: the recipe that turns weights files into one runnable checkpoint.

    ``components`` are imported (each with its format's options) and assembled by
    :func:`avemo.convert.import_sources`; ``seq_len`` is L; ``features`` the visual feature mode
    the head reads (None: whatever the imported head reads).
    """

    name: str
    file: str
    components: tuple[Component, ...]
    seq_len: int
    features: str | None
    matches: str
    notes: str

    @property
    def path(self) -> Path:
        """Where the assembled checkpoint lives in the cache."""
        return cache_dir() / "pipelines" / self.name / self.file

    @property
    def recipe(self) -> dict:
        """The recipe as data; a cached file made by another recipe is stale."""
        return {
            "components": [
                {"weights": c.weights, "options": dict(c.options)} for c in self.components
            ],
            "seq_len": self.seq_len,
            "features": self.features,
        }

    @property
    def weights(self) -> list[str]:
        return [c.weights for c in self.components]


def _parse_pipeline(
    raw: object, where: str, path: Path, weights: Mapping[str, Weights]
) -> Pipeline:
    from avemo.models.layouts import OPTIONS

    def bad(message: str) -> AvemoError:
        return AvemoError(f"{where}: {message}", path)

    if not isinstance(raw, dict):
        raise bad("not an object")
    where = f"{where} ({raw.get('name', '?')})"
    missing = [key for key in PIPELINE_KEYS if key not in raw]
    if missing:
        raise bad(f"missing keys: {', '.join(missing)}")
    unknown = sorted(set(raw) - set(PIPELINE_KEYS))
    if unknown:
        raise bad(f"unknown keys: {', '.join(unknown)}")
    for key in ("name", "file", "matches", "notes"):
        if not isinstance(raw[key], str) or not raw[key]:
            raise bad(f"{key!r} must be a non-empty string")
    if not _NAME.match(raw["name"]):
        raise bad("'name' must be lower-case letters, digits, '.' and '-'")
    if raw["name"] in weights:
        raise bad("a pipeline cannot have the name of a weights entry")
    if "/" in raw["file"] or "\\" in raw["file"] or not raw["file"].endswith(".safetensors"):
        raise bad("'file' must be a plain file name ending in .safetensors")
    seq_len = raw["seq_len"]
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
        raise bad("'seq_len' must be a positive integer")
    if raw["features"] is not None and raw["features"] not in FEATURES:
        raise bad(f"'features' must be null or one of {', '.join(FEATURES)}")
    if not isinstance(raw["components"], list) or not raw["components"]:
        raise bad("'components' must be a non-empty list")
    components = []
    for item in raw["components"]:
        if (
            not isinstance(item, dict)
            or set(item) - {"weights", "options"}
            or "weights" not in item
        ):
            raise bad("each component is {'weights': NAME, 'options': {...}}")
        name, options = item["weights"], item.get("options", {})
        if name not in weights:
            raise bad(f"component {name!r} is not a weights entry of the manifest")
        if not isinstance(options, dict):
            raise bad(f"component {name}: 'options' must be an object")
        fmt = weights[name].import_format
        allowed = OPTIONS.get(fmt, set()) if fmt else set()
        if set(options) - allowed:
            extra = ", ".join(sorted(set(options) - allowed))
            raise bad(f"component {name}: option {extra} does not apply to format {fmt}")
        components.append(Component(name, tuple(sorted(options.items()))))
    return Pipeline(
        name=raw["name"],
        file=raw["file"],
        components=tuple(components),
        seq_len=seq_len,
        features=raw["features"],
        matches=raw["matches"],
        notes=raw["notes"],
    )


def load_pipelines(path: str | os.PathLike | None = None) -> dict[str, Pipeline]:
    """Read and validate a manifest's pipelines; entries by name, in file order."""
    path = Path(path) if path is not None else manifest_path()
    weights = load_manifest(path)
    entries: dict[str, Pipeline] = {}
    for index, raw in enumerate(_read_manifest(path).get("pipelines", [])):
        entry = _parse_pipeline(raw, f"pipeline {index}", path, weights)
        if entry.name in entries:
            raise AvemoError(f"duplicate pipeline name {entry.name!r}", path)
        entries[entry.name] = entry
    return entries


def get_pipeline(name: str, pipelines: Mapping[str, Pipeline] | None = None) -> Pipeline:
    """The manifest pipeline called ``name`` (:func:`get`'s errors for an unknown one)."""
    pipelines = load_pipelines() if pipelines is None else pipelines
    if name in pipelines:
        return pipelines[name]
    get(name)  # raises, with suggestions among weights and pipelines
    raise AvemoError(f"{name} is a weights file, not a pipeline")


def needs_trust(pipeline: Pipeline, manifest: Mapping[str, Weights] | None = None) -> bool:
    """Whether pulling the pipeline needs ``--trust``: a component whose hash is not known."""
    manifest = load_manifest() if manifest is None else manifest
    state = load_state()
    return any(not expected_sha256(manifest[name], state) for name in pipeline.weights)


def pull_command(pipeline: Pipeline, manifest: Mapping[str, Weights] | None = None) -> str:
    """The exact command that pulls ``pipeline``."""
    trust = " --trust" if needs_trust(pipeline, manifest) else ""
    return f"avemo weights pull {pipeline.name}{trust}"


def record_pipeline(
    pipeline: Pipeline, sha256: str, components: Mapping[str, str], **extra
) -> None:
    """Record the assembled file's hash, the components' hashes and the recipe it was made by."""
    stat = pipeline.path.stat()
    state = load_state()
    state[pipeline.name] = {
        "kind": "pipeline",
        "file": pipeline.file,
        "sha256": sha256,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "components": dict(components),
        "recipe": pipeline.recipe,
        "recorded": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **extra,
    }
    with atomic_path(cache_dir() / STATE_FILE) as tmp:
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def pipeline_status(pipeline: Pipeline, manifest: Mapping[str, Weights] | None = None) -> str:
    """``ready`` (assembled, recorded, from the current recipe and component files), ``stale``
    (assembled from other component files or by another recipe), or ``not pulled (K of N
    components cached)``."""
    manifest = load_manifest() if manifest is None else manifest
    state = load_state()
    record = state.get(pipeline.name, {})
    if pipeline.path.is_file() and record.get("kind") == "pipeline":
        current = {n: expected_sha256(manifest[n], state) for n in pipeline.weights}
        if record.get("recipe") == pipeline.recipe and record.get("components") == current:
            return "ready"
        return "stale"
    cached = sum(status(manifest[n]) in {"cached", "bundled"} for n in pipeline.weights)
    return f"not pulled ({cached} of {len(pipeline.weights)} components cached)"


def _resolve_pipeline(pipeline: Pipeline, manifest: Mapping[str, Weights]) -> Path:
    """The assembled file of a ready pipeline, re-hashed only when its size or time changed."""
    state_now = pipeline_status(pipeline, manifest)
    if state_now != "ready":
        why = (
            "was assembled from other files or by another recipe"
            if state_now == "stale"
            else "is not pulled yet"
        )
        raise AvemoError(
            f"pipeline {pipeline.name} {why}: run `{pull_command(pipeline, manifest)}`"
        )
    record = load_state()[pipeline.name]
    stat = pipeline.path.stat()
    if record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns:
        return pipeline.path
    digest = sha256_file(pipeline.path)
    if digest != record.get("sha256"):
        raise AvemoError(
            f"sha256 {digest}, expected {record.get('sha256')}: corrupt; "
            f"`{pull_command(pipeline, manifest)}` assembles it again",
            pipeline.path,
        )
    record_pipeline(
        pipeline, digest, record["components"],
        **{k: v for k, v in record.items() if k in {"seconds", "avemo_version"}},
    )  # fmt: skip
    return pipeline.path


def _pipeline_names() -> list[str]:
    """The packaged (or ``$AVEMO_MANIFEST``) manifest's pipeline names, for suggestions."""
    try:
        return [raw.get("name") for raw in _read_manifest(manifest_path()).get("pipelines", [])
                if isinstance(raw, dict)]  # fmt: skip
    except AvemoError:
        return []


# --- cache -------------------------------------------------------------------------------------


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
        raise InputError(f"size {size} bytes, expected {entry.size}", path)
    digest = sha256_file(path)
    if expected and digest != expected:
        raise InputError(f"sha256 {digest}, expected {expected}", path)
    if entry.sha256_prefix and not digest.startswith(entry.sha256_prefix):
        raise InputError(f"sha256 {digest} does not start with {entry.sha256_prefix}", path)
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
                raise InputError(
                    f"{name} is present but has no known sha256: check where it came from, then "
                    f"`avemo weights verify {name} --trust` records its hash",
                    entry.path,
                )
        if not entry.urls:
            raise AvemoError(f"{name} has no public download: {entry.manual_way()}")
        if not expected and not trust:
            raise InputError(
                f"{name} has no published sha256, so avemo cannot verify it: run "
                f"`avemo weights pull {name} --trust` to download it and record its hash"
            )
        failures = []
        for url in entry.urls:
            try:
                _fetch_with_retries(entry, url, timeout=timeout, retries=retries, progress=progress)
            except Failed as failure:
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
                raise InputError(why, url) from None
            os.replace(part, entry.path)
            _save_record(entry, digest, trusted=not entry.sha256, url=url)
            if not expected:
                log.warning("%s: recorded sha256 %s (trusted, not verified)", name, digest)
            return entry.path
        raise InputError(
            f"cannot download {name}: {'; '.join(failures)}. Manual way: {entry.manual_way()}"
        )


def _fetch_with_retries(
    entry: Weights, url: str, *, timeout: float, retries: int, progress: bool | None
) -> None:
    for attempt in range(retries + 1):
        try:
            fetch(
                url, entry.part_path, size=entry.size, name=entry.name, timeout=timeout,
                progress=progress,
            )  # fmt: skip
            return
        except Cut as cut:
            kept = entry.part_path.stat().st_size if entry.part_path.exists() else 0
            if attempt == retries:
                raise InputError(
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
    """A weights file for other commands: an existing path, a bundled file, a verified cached one,
    or the assembled checkpoint of a pulled pipeline.

    A cached file is re-hashed only when its size or modification time changed since it was last
    verified. A name not pulled yet raises an error giving the exact ``avemo weights pull``
    command.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    text = os.fspath(name_or_path)
    manifest = load_manifest() if manifest is None else manifest
    if text not in manifest:
        if os.sep in text or "/" in text or Path(text).suffix:
            raise AvemoError("weights file not found", path)
        pipelines = load_pipelines()
        if text in pipelines and set(pipelines[text].weights) <= set(manifest):
            return _resolve_pipeline(pipelines[text], manifest)
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


def table() -> list[dict[str, object]]:
    """One row per manifest entry for ``avemo weights list``: name, component, import format,
    size in bytes (None: unknown), whether its sha256 is known, and its cache status; then one
    row per pipeline (component ``pipeline``, its status ``ready`` or what is missing)."""
    manifest = load_manifest()
    rows: list[dict[str, object]] = [
        {
            "name": entry.name,
            "component": entry.component,
            "import": entry.import_format,
            "size": entry.size,
            "sha256": "known" if entry.sha256 else "unknown",
            "status": status(entry),
        }
        for entry in manifest.values()
    ]
    for pipeline in load_pipelines().values():
        ready = pipeline_status(pipeline, manifest)
        rows.append(
            {
                "name": pipeline.name,
                "component": "pipeline",
                "import": None,
                "size": pipeline.path.stat().st_size if ready == "ready" else None,
                "sha256": "recorded" if ready == "ready" else "-",
                "status": ready,
            }
        )
    return rows


def info(name: str) -> dict[str, object]:
    """Everything known about a weights entry (:func:`describe`) or a pipeline, for
    ``avemo weights info``."""
    pipelines = load_pipelines()
    if name not in pipelines:
        return describe(get(name))
    pipeline = pipelines[name]
    details: dict[str, object] = {
        "name": pipeline.name,
        "component": "pipeline",
        "components": [
            c.weights + "".join(f" {k}={v}" for k, v in c.options) for c in pipeline.components
        ],
        "seq_len": pipeline.seq_len,
        "features": pipeline.features or "as the head reads",
        "matches": pipeline.matches,
        "notes": pipeline.notes,
        "path": str(pipeline.path),
        "status": pipeline_status(pipeline),
        "pull": pull_command(pipeline),
    }
    record = load_state().get(name)
    if record and details["status"] == "ready":
        details["sha256"] = record.get("sha256")
        details["assembled"] = record.get("recorded")
    return details
