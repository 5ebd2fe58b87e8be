"""``avemo weights import``: published checkpoints -> avemo checkpoints with provenance.

The key tables live in :mod:`avemo.models.layouts`; this module resolves sources (files, or
manifest names through the cache), records where each part came from (file, sha256, manifest
entry and licence), writes one avemo checkpoint per part or, with ``pipeline=True``, assembles
the parts of all sources into one ``pipeline`` checkpoint (:func:`avemo.models.assemble`) that
``avemo annotate`` runs.

Formats whose file holds several networks write one checkpoint per part: ``tsav`` gives
``OUT.visual.safetensors`` and ``OUT.audio.safetensors`` for ``-o OUT.safetensors``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from avemo import hub, models
from avemo.errors import AvemoError
from avemo.models.layouts import (
    FORMATS,
    JCA_REGRESSOR_MODES,
    OPTIONS,
    Layout,
    Source,
    detect_format,
    fill_layout,
    read_source,
)

SUFFIX = ".safetensors"
ROLES = tuple(models.ROLES)  # parts of a pipeline, in output-name order

# --- provenance and output names ---------------------------------------------------------------


def match_entry(source: Source, name: str | None = None) -> hub.Weights | None:
    """The manifest entry a source file is: by ``name``, else by its sha256 or cache path."""
    manifest = hub.load_manifest()
    if name is not None:
        return hub.get(name, manifest)
    state = hub.load_state()
    resolved = source.path.resolve()
    for entry in manifest.values():
        recorded = state.get(entry.name, {}).get("sha256")
        if source.sha256 in {entry.sha256, recorded} - {None}:
            return entry
        if entry.path.resolve() == resolved:
            return entry
    return None


def provenance(
    source: Source,
    fmt: str,
    layout: Layout,
    entry: hub.Weights | None,
    *,
    ignored: Mapping[str, list[str]],
    notes: list[str],
) -> dict:
    """The provenance of a part imported from ``source``."""
    return {
        "trained": layout.trained,
        "source": entry.source if entry else str(source.path.resolve()),
        "source_file": source.label,
        "source_sha256": source.sha256,
        "weights_name": entry.name if entry else None,
        "licence": entry.licence if entry else None,
        "import_format": fmt,
        "layout": layout.description,
        "ignored": {why: len(keys) for why, keys in sorted(ignored.items())},
        "notes": [*layout.notes, *notes],
    }


def output_paths(output: str | os.PathLike, roles: list[str], stem: str) -> dict[str, Path]:
    """Where each part goes.

    ``OUT.safetensors``: one part -> that file; several -> ``OUT.<role>.safetensors``. A folder
    (existing, or given with a trailing slash) -> ``<folder>/<stem>[.<role>].safetensors``.
    """
    text = os.fspath(output)
    path = Path(text)
    if path.is_dir() or text.endswith(("/", os.sep)):
        base = path / stem
    elif path.name.endswith(SUFFIX):
        if len(roles) == 1:
            return {roles[0]: path}
        base = path.with_name(path.name[: -len(SUFFIX)])
    else:
        raise AvemoError(f"the output must be a {SUFFIX} file or a folder", path)
    if len(roles) == 1:
        return {roles[0]: base.with_name(base.name + SUFFIX)}
    return {role: base.with_name(f"{base.name}.{role}{SUFFIX}") for role in roles}


# --- import ------------------------------------------------------------------------------------


@dataclass
class Imported:
    """One imported part: the filled module and its provenance."""

    role: str
    module: torch.nn.Module
    provenance: dict


def convert(
    source: Source, fmt: str, *, entry: hub.Weights | None = None, **options
) -> list[Imported]:
    """Turn a read source into filled avemo modules (nothing written)."""
    layout, mapped, filled = fill_layout(source.state, fmt, source.path, **options)
    return [
        Imported(
            part.role,
            module,
            provenance(source, fmt, layout, entry, ignored=mapped.ignored, notes=notes),
        )
        for part, module, notes in filled
    ]


def load_source(
    src: str | os.PathLike,
    fmt: str | None = None,
    *,
    name: str | None = None,
    member: str | None = None,
    for_pipeline: bool = False,
    **options,
) -> tuple[list[Imported], str]:
    """Resolve, read and convert one source; its parts and a stem for output names.

    ``for_pipeline``: an avemo checkpoint (``.safetensors``) is taken as it is, one part whose
    role is its component; options the format does not take are dropped (a pipeline's options
    are meant for some of its sources).
    """
    path, entry = resolve_source(src, name)
    if path.name.endswith(SUFFIX):
        if not for_pipeline:
            raise AvemoError("already an avemo checkpoint: nothing to import", path)
        module = models.load(path)
        component = module.avemo_header["component"]
        role = models.role_of(component)
        if role not in ROLES:
            raise AvemoError(f"a {component} checkpoint is not a part of a pipeline", path)
        stem = path.name[: -len(SUFFIX)]
        return [Imported(role, module, module.avemo_header["provenance"])], stem
    source = read_source(path, member=member)
    entry = entry or match_entry(source)
    fmt = fmt or (entry.import_format if entry else None) or detect_format(source.state)
    if fmt is None:
        raise AvemoError(
            f"cannot tell the format of this file: give --format ({', '.join(FORMATS)})", path
        )
    stem = entry.name if entry else path.name.split(".")[0]
    if for_pipeline:
        options = {k: v for k, v in options.items() if k in OPTIONS.get(fmt, ())}
    return convert(source, fmt, entry=entry, **options), stem


def import_weights(
    src: str | os.PathLike,
    fmt: str | None,
    output: str | os.PathLike,
    *,
    name: str | None = None,
    member: str | None = None,
    overwrite: bool = False,
    **options,
) -> list[Path]:
    """Convert a published checkpoint into avemo checkpoint(s); the paths written.

    ``src`` is a file or a manifest name (resolved through the cache with ``avemo.hub``);
    ``fmt`` defaults to the manifest entry's ``import_format``, else to the format the keys
    look like. ``name`` says which manifest entry a plain file is (for provenance and licence;
    by default a file is matched by its sha256). ``member`` picks the checkpoint inside a zip
    archive. ``options`` are format-specific: ``features="flat"`` (R(2+1)D/R3D layer4 features
    of ``tsav``/``torchvision``), ``regressor="retrain"`` (a reference JCA's attention only, in
    the paper's head, instead of the default compatibility mode), ``dimension="valence"`` or
    ``"arousal"`` (what a one-output CVPRW fusion file regresses), ``heads=N`` (JMT attention
    heads). Existing outputs are kept unless
    ``overwrite``.
    """
    parts, stem = load_source(src, fmt, name=name, member=member, **options)
    targets = output_paths(output, [p.role for p in parts], stem)
    _check_targets(targets.values(), overwrite)
    for part in parts:
        models.save(part.module, targets[part.role], provenance=part.provenance)
    return [targets[p.role] for p in parts]


def _choose(candidates: dict[str, list[tuple[int, Imported, str]]]) -> dict[str, Imported]:
    """One part per role; a source giving only that part beats one giving several (tsav)."""
    chosen = {}
    for role in ROLES:
        found = candidates.get(role, [])
        if not found:
            raise AvemoError(f"no {role} part among the sources of the pipeline")
        best = min(count for count, _, _ in found)
        winners = [(part, label) for count, part, label in found if count == best]
        if len(winners) > 1:
            labels = ", ".join(label for _, label in winners)
            raise AvemoError(f"several sources give the {role} part ({labels}): keep one")
        chosen[role] = winners[0][0]
    return chosen


def assemble(parts: Mapping[str, Imported], *, seq_len: int | None = None) -> Imported:
    """One ``pipeline`` part holding the parts' weights (:func:`avemo.models.assemble`), with
    the provenance of every part."""
    pipeline, notes = models.assemble(
        {role: parts[role].module for role in ROLES}, seq_len=seq_len
    )
    records = {role: parts[role].provenance for role in ROLES}
    provenance = {
        "trained": all(r.get("trained") for r in records.values()),
        "source": "; ".join(f"{role}: {r.get('source')}" for role, r in records.items()),
        "licence": "; ".join(
            f"{role}: {r['licence']}" for role, r in records.items() if r.get("licence")
        )
        or None,
        "parts": records,
        "notes": notes,
    }
    return Imported("pipeline", pipeline, provenance)


def import_pipeline(
    sources: Iterable[str | os.PathLike],
    output: str | os.PathLike,
    *,
    fmt: str | None = None,
    seq_len: int | None = None,
    overwrite: bool = False,
    **options,
) -> Path:
    """Import several sources and write them as one ``pipeline`` checkpoint; its path.

    The sources must give exactly one visual backbone, audio backbone and head (a source that
    gives only one part wins over ``tsav``, which gives two). Sources may also be avemo
    checkpoints. The sequence length is the head's (``seq_len`` for a JMT head: 16 by default).
    """
    candidates: dict[str, list[tuple[int, Imported, str]]] = {}
    stems = {}
    for src in sources:
        parts, stem = load_source(src, fmt, for_pipeline=True, **options)
        for part in parts:
            candidates.setdefault(part.role, []).append((len(parts), part, os.fspath(src)))
            stems[part.role] = stem
    if not candidates:
        raise AvemoError("no sources given")
    pipeline = assemble(_choose(candidates), seq_len=seq_len)
    target = output_paths(output, ["pipeline"], stems["head"])["pipeline"]
    _check_targets([target], overwrite)
    models.save(pipeline.module, target, provenance=pipeline.provenance)
    return target


def resolve_source(src: str | os.PathLike, name: str | None) -> tuple[Path, hub.Weights | None]:
    """A source file and its manifest entry (if ``src`` is a manifest name, or ``name`` given)."""
    path = Path(src).expanduser()
    manifest = hub.load_manifest()
    entry = hub.get(name, manifest) if name else None
    if path.is_file():
        return path, entry
    text = os.fspath(src)
    if text in manifest:
        entry = manifest[text]
    return hub.resolve(text, manifest), entry


def _check_targets(targets: Iterable[Path], overwrite: bool) -> None:
    if overwrite:
        return
    existing = [p for p in targets if p.exists()]
    if existing:
        raise AvemoError("already exists (--overwrite replaces it)", existing[0])


def import_command(
    sources: list[str],
    output: str | os.PathLike,
    *,
    fmt: str | None = None,
    pipeline: bool = False,
    name: str | None = None,
    member: str | None = None,
    seq_len: int | None = None,
    overwrite: bool = False,
    **options,
) -> list[tuple[str, Path]]:
    """``avemo weights import``: the options checked (an :class:`AvemoError` before any work),
    then :func:`import_pipeline` or :func:`import_weights`; returns ``(role, path)`` per file
    written. ``options``: ``features``, ``regressor``, ``dimension``, ``heads`` (None: unset)."""
    from avemo.metrics import DIMENSIONS

    options = {key: value for key, value in options.items() if value is not None}
    if fmt is not None and fmt not in FORMATS:
        raise AvemoError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if len(sources) > 1 and not pipeline:
        raise AvemoError("several sources are imported together only with --pipeline")
    if name is not None and len(sources) > 1:
        raise AvemoError("--name describes one source file")
    if options.get("features", "pool") not in {"pool", "flat"}:
        raise AvemoError("--features must be pool or flat")
    if options.get("regressor", JCA_REGRESSOR_MODES[0]) not in JCA_REGRESSOR_MODES:
        raise AvemoError(f"--regressor takes {' or '.join(JCA_REGRESSOR_MODES)}")
    if options.get("dimension", DIMENSIONS[0]) not in DIMENSIONS:
        raise AvemoError("--dimension must be valence or arousal")
    manifest = hub.load_manifest()
    if name is not None:
        hub.get(name, manifest)
    for src in sources:  # an unknown name is a usage error, before any work
        path = Path(src).expanduser()
        if not path.exists() and "/" not in src and not path.suffix:
            hub.get(src, manifest)
    if pipeline:
        target = import_pipeline(
            sources, output, fmt=fmt, seq_len=seq_len, member=member, overwrite=overwrite,
            **options,
        )  # fmt: skip
        return [("pipeline", target)]
    paths = import_weights(
        sources[0], fmt, output, name=name, member=member, overwrite=overwrite, **options
    )
    return [(models.role_of(models.read_header(p)["component"]), p) for p in paths]
