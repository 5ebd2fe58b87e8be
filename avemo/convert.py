"""``avemo weights import``: published checkpoints -> avemo checkpoints with provenance.

The key tables live in :mod:`avemo.models.layouts`; this module resolves sources (files, or
manifest names through the cache), records where each part came from (file, sha256, manifest
entry and licence), writes one avemo checkpoint per part or, with ``pipeline=True``, assembles
the parts of all sources into one ``pipeline`` checkpoint (:func:`avemo.models.assemble`) that
``avemo annotate`` runs. Named pipelines of the manifest are pulled and assembled into the cache
here too (:func:`pull_pipeline`, ``avemo weights pull PIPELINE``).

Formats whose file holds several networks write one checkpoint per part: ``tsav`` gives
``OUT.visual.safetensors`` and ``OUT.audio.safetensors`` for ``-o OUT.safetensors``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from avemo import hub, models
from avemo.errors import AvemoError
from avemo.files import sha256_file
from avemo.models.layouts import (
    FORMATS,
    JCA_REGRESSOR_MODES,
    OPTIONS,
    Layout,
    Source,
    detect_format,
    fill_layout,
    one_output_jca,
    read_source,
)

log = logging.getLogger("avemo")

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
        **({"dimension": layout.dimension} if layout.dimension else {}),
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
    dimensions: Iterator[str] | None = None,
    **options,
) -> tuple[list[Imported], str]:
    """Resolve, read and convert one source; its parts and a stem for output names.

    ``for_pipeline``: an avemo checkpoint (``.safetensors``) is taken as it is, one part whose
    role is its component; options the format does not take are dropped (a pipeline's options
    are meant for some of its sources). ``dimensions``: where a one-output CVPRW fusion file
    without a ``dimension`` option takes the dimension it regresses from (the order of the
    sources: valence, then arousal); a file whose name says the other dimension is an error.
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
    if dimensions is not None and "dimension" not in options and one_output_jca(source.state):
        options["dimension"] = _dimension_of(path, next(dimensions, None))
    return convert(source, fmt, entry=entry, **options), stem


def _dimension_of(path: Path, dimension: str | None) -> str:
    """The dimension a one-output CVPRW fusion file comes in for, checked against its name."""
    from avemo.metrics import DIMENSIONS

    if dimension is None:
        raise AvemoError("a third one-dimension JCA file: give one valence and one arousal file")
    said = [d for d in DIMENSIONS if d in path.name.lower()]
    if len(said) == 1 and said[0] != dimension:
        raise AvemoError(
            f"its name says {said[0]} but it comes in as the {dimension} file: give the valence "
            "file first, then the arousal file",
            path,
        )
    return dimension


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


def _join(role: str, found: list[tuple[int, Imported, str]]) -> Imported | None:
    """Several single-part sources of one role that avemo combines: two one-dimension CVPRW
    heads (valence, arousal) into one ``per_dimension`` head; an ``i3d_tcn`` and an ``r3d_18``
    visual backbone into the ablation's ``i3d_tcn_r3d``. None when they are not such a pair."""
    from avemo.models.heads import join_dimensions
    from avemo.models.i3d import combine_i3d_tcn_r3d

    single = [part for count, part, _ in found if count == 1]
    if len(single) != 2:
        return None
    if role == "head":
        by_dimension = {part.provenance.get("dimension"): part for part in single}
        if set(by_dimension) != {"valence", "arousal"}:
            return None
        valence, arousal = by_dimension["valence"], by_dimension["arousal"]
        try:
            module = join_dimensions(valence.module, arousal.module)
        except ValueError as error:
            raise AvemoError(f"cannot join the valence and arousal heads: {error}") from None
        note = (
            "one head per dimension (per_dimension): the valence file's valence output and the "
            "arousal file's arousal output, each with its own attention; each file's untrained "
            "regressor of the other dimension is kept but unused"
        )
        records = {"valence": valence.provenance, "arousal": arousal.provenance}
    elif role == "visual":
        by_builder = {part.module.avemo_config["builder"]: part for part in single}
        if set(by_builder) != {"i3d_tcn", "r3d_18"}:
            return None
        try:
            module = combine_i3d_tcn_r3d(by_builder["i3d_tcn"].module, by_builder["r3d_18"].module)
        except ValueError as error:
            raise AvemoError(f"cannot combine I3D-TCN and R3D-18: {error}") from None
        note = "I3D-TCN + R3D-18 (i3d_tcn_r3d): features concatenated, 512 + 512"
        records = {"i3d_tcn": by_builder["i3d_tcn"].provenance,
                   "r3d": by_builder["r3d_18"].provenance}  # fmt: skip
    else:
        return None
    provenance = {
        "trained": True,  # every output used comes from trained weights
        "source": "; ".join(f"{k}: {r.get('source')}" for k, r in records.items()),
        "licence": "; ".join(f"{k}: {r['licence']}" for k, r in records.items() if r.get("licence"))
        or None,
        "parts": records,
        "notes": [note],
    }
    return Imported(role, module, provenance)


def _choose(candidates: dict[str, list[tuple[int, Imported, str]]]) -> dict[str, Imported]:
    """One part per role; a source giving only that part beats one giving several (tsav); two
    single-part sources that avemo combines (:func:`_join`) become one part."""
    chosen = {}
    for role in ROLES:
        found = candidates.get(role, [])
        if not found:
            raise AvemoError(f"no {role} part among the sources of the pipeline")
        joined = _join(role, found)
        if joined is not None:
            chosen[role] = joined
            continue
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
    head = parts["head"].module
    seq_len = seq_len or getattr(head, "seq_len", None)  # per_dimension: its heads' L
    pipeline, notes = models.assemble({role: parts[role].module for role in ROLES}, seq_len=seq_len)
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


def import_sources(
    sources: Iterable[tuple[str | os.PathLike, str | None, dict]],
    *,
    fmt: str | None = None,
    seq_len: int | None = None,
    features: str | None = None,
) -> tuple[Imported, str]:
    """Import ``(source, manifest name or None, options)`` triples and assemble them into one
    ``pipeline`` part; it and the stem of its head source. ``features``: the visual feature mode
    the recipe expects (an :class:`AvemoError` if the head reads another)."""
    candidates: dict[str, list[tuple[int, Imported, str]]] = {}
    stems = {}
    taken: list[str] = []  # dimensions given to one-output CVPRW files by their order

    def by_order() -> Iterator[str]:
        for dimension in ("valence", "arousal"):
            taken.append(dimension)
            yield dimension

    dimensions = by_order()
    for src, name, options in sources:
        parts, stem = load_source(
            src, fmt, name=name, for_pipeline=True, dimensions=dimensions, **options
        )
        for part in parts:
            candidates.setdefault(part.role, []).append((len(parts), part, os.fspath(src)))
            stems[part.role] = stem
    if not candidates:
        raise AvemoError("no sources given")
    if len(taken) == 1:
        raise AvemoError(
            "one one-output CVPRW fusion file among the sources: give the valence file and the "
            "arousal file (in that order), or say which dimension it regresses with --dimension"
        )
    pipeline = assemble(_choose(candidates), seq_len=seq_len)
    got = pipeline.module.avemo_config["kwargs"]["visual"]["kwargs"].get("features", "pool")
    if features is not None and got != features:
        raise AvemoError(f"the recipe expects {features} visual features, the head reads {got}")
    return pipeline, stems["head"]


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
    gives only one part wins over ``tsav``, which gives two), or pairs that avemo combines: two
    one-output CVPRW fusion files (valence first, then arousal; ``--dimension`` unset) become one
    head per dimension, an I3D-TCN and an R3D-18 backbone the two-backbone ``i3d_tcn_r3d``.
    Sources may also be avemo checkpoints. The sequence length is the head's (``seq_len`` for a
    JMT head: 16 by default).
    """
    pipeline, stem = import_sources(
        [(src, None, options) for src in sources], fmt=fmt, seq_len=seq_len
    )
    target = output_paths(output, ["pipeline"], stem)["pipeline"]
    _check_targets([target], overwrite)
    models.save(pipeline.module, target, provenance=pipeline.provenance)
    return target


# --- named pipelines: pulled, imported and assembled once into the cache -----------------------


def pull_pipeline(
    name: str,
    *,
    trust: bool = False,
    timeout: float = hub.DEFAULT_TIMEOUT,
    progress: bool | None = None,
) -> Path:
    """``avemo weights pull PIPELINE``: every component the cache lacks pulled (verified,
    resumable: :func:`avemo.hub.pull`), then imported and assembled once by the manifest's
    recipe into ``<cache>/pipelines/<name>/``, its sha256 recorded with the components' hashes.
    A pipeline already assembled from the same files by the same recipe is returned as it is.
    """
    manifest = hub.load_manifest()
    pipeline = hub.get_pipeline(name)
    if hub.pipeline_status(pipeline, manifest) == "ready":
        try:
            return hub.resolve(name, manifest)
        except AvemoError as error:  # changed since it was assembled: assemble it again
            log.warning("%s; assembling it again", error)
            pipeline.path.unlink()
    paths = {
        c.weights: hub.pull(c.weights, trust=trust, manifest=manifest, timeout=timeout,
                            progress=progress)
        for c in pipeline.components
    }  # fmt: skip
    state = hub.load_state()
    hashes = {n: hub.expected_sha256(manifest[n], state) for n in pipeline.weights}
    start = time.perf_counter()
    try:
        part, _ = import_sources(
            [(paths[c.weights], c.weights, dict(c.options)) for c in pipeline.components],
            seq_len=pipeline.seq_len,
            features=pipeline.features,
        )
    except AvemoError as error:
        raise AvemoError(f"cannot assemble pipeline {name}: {error}") from None
    if part.module.seq_len != pipeline.seq_len:
        raise AvemoError(
            f"cannot assemble pipeline {name}: its head takes L = {part.module.seq_len}, "
            f"the manifest says {pipeline.seq_len}"
        )
    provenance = {**part.provenance, "pipeline": name, "matches": pipeline.matches,
                  "components": hashes}  # fmt: skip
    pipeline.path.parent.mkdir(parents=True, exist_ok=True)
    models.save(part.module, pipeline.path, provenance=provenance)  # atomic
    seconds = round(time.perf_counter() - start, 3)
    hub.record_pipeline(pipeline, sha256_file(pipeline.path), hashes, seconds=seconds)
    log.info("%s: imported and assembled in %.1f s", name, seconds)
    return pipeline.path


def pull_command(
    names: list[str], *, trust: bool = False, timeout: float = hub.DEFAULT_TIMEOUT, stream=None
) -> dict[str, Path | None]:
    """``avemo weights pull``: weights files into the cache (:func:`avemo.hub.pull`) and named
    pipelines assembled there (:func:`pull_pipeline`); name -> its path, or None when it failed
    (one ``error:`` line each on ``stream``). An unknown name is an :class:`AvemoError` before
    any download."""
    stream = stream or sys.stderr
    manifest = hub.load_manifest()
    pipelines = hub.load_pipelines()
    for name in names:
        if name not in pipelines:
            hub.get(name, manifest)
    done: dict[str, Path | None] = {}
    for name in names:
        try:
            if name in pipelines:
                done[name] = pull_pipeline(name, trust=trust, timeout=timeout)
            else:
                done[name] = hub.pull(name, trust=trust, manifest=manifest, timeout=timeout)
        except AvemoError as error:
            print(f"error: {error}", file=stream, flush=True)
            done[name] = None
    return done


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
