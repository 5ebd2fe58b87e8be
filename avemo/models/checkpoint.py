"""avemo's one checkpoint format: a safetensors file with a JSON header.

Every network avemo saves or imports is rebuilt from its file alone: a ``.safetensors`` file
whose metadata key ``"avemo"`` holds a JSON header naming the registered *builder* that makes the
module, the builder's keyword arguments, the input preprocessing the module expects, and the
weights' provenance (where they came from, whether they are trained at all)::

    {"format": 1, "builder": "jca", "component": "head", "kwargs": {...}, "preprocessing": {...},
     "provenance": {"trained": true, "source": "...", "source_sha256": "..." | null,
                    "licence": "..." | null, "training": {...} | null,
                    "created": "2024-01-01T00:00:00+00:00", "avemo_version": "0.1.0"}}

``save(module, path, provenance=...)`` writes one, ``read_header(path)`` reads the JSON without
the tensors, ``load(path)`` rebuilds the module and fills it.
"""

from __future__ import annotations

import datetime
import json
import os
import struct
from pathlib import Path

import torch
from torch import nn

from avemo.errors import AvemoError
from avemo.files import atomic_path
from avemo.models.registry import _jsonable, build, builder

FORMAT = 1  # version of the checkpoint header
METADATA_KEY = "avemo"  # safetensors metadata key holding the JSON header
UNTRAINED = "random initialisation"  # default provenance source of untrained weights


def _provenance(provenance: dict) -> dict:
    """Validate and complete a provenance dict (``trained`` is required)."""
    if not isinstance(provenance, dict) or not isinstance(provenance.get("trained"), bool):
        raise ValueError("provenance must be a dict with a boolean 'trained'")
    out = {
        "trained": provenance["trained"],
        "source": provenance.get("source") or (None if provenance["trained"] else UNTRAINED),
        "source_sha256": provenance.get("source_sha256"),
        "licence": provenance.get("licence"),
        "training": provenance.get("training"),
    }
    if not isinstance(out["source"], str):
        raise ValueError("provenance of trained weights needs a 'source' (str)")
    for key in ("source_sha256", "licence"):
        if out[key] is not None and not isinstance(out[key], str):
            raise ValueError(f"provenance {key!r} must be a str or None")
    if out["training"] is not None and not isinstance(out["training"], dict):
        raise ValueError("provenance 'training' must be a dict or None")
    from avemo import __version__

    extra = {k: v for k, v in provenance.items() if k not in out}
    out.update(extra)
    out["created"] = provenance.get("created") or datetime.datetime.now(datetime.UTC).isoformat(
        timespec="seconds"
    )
    out["avemo_version"] = __version__
    return _jsonable(out, "provenance")


def header_of(module: nn.Module, provenance: dict) -> dict:
    """The checkpoint header :func:`save` would write for ``module``."""
    config = getattr(module, "avemo_config", None)
    if config is None:
        raise ValueError("module was not made by avemo.models.build (no avemo_config)")
    return {
        "format": FORMAT,
        "builder": config["builder"],
        "component": config["component"],
        "kwargs": config["kwargs"],
        "preprocessing": config["preprocessing"],
        "provenance": _provenance(provenance),
    }


def save(module: nn.Module, path: str | os.PathLike, *, provenance: dict) -> None:
    """Write ``module`` (made by :func:`build` or :func:`load`) as an avemo checkpoint.

    ``provenance`` must say whether the weights are ``trained``; ``source`` (where they came
    from), ``source_sha256``, ``licence`` and ``training`` (data, run, metrics) are recorded too,
    with the creation time and avemo's version. Tensors shared between parameter names are
    stored once; the file is written to a temporary name and renamed.
    """
    from safetensors.torch import save_model

    header = header_of(module, provenance)
    metadata = {METADATA_KEY: json.dumps(header, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_model(module, str(tmp), metadata=metadata, force_contiguous=True)


def _check_file(path: Path) -> None:
    """Raise a clear error if ``path`` is missing, not safetensors, or cut short."""
    if not path.exists():
        raise AvemoError("no such checkpoint file", path)
    if path.is_dir():
        raise AvemoError("is a folder, not a checkpoint file", path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            start = handle.read(9)
    except OSError as error:
        raise AvemoError(f"cannot read the checkpoint ({error.strerror or error})", path) from None
    if size < 9:
        raise AvemoError(f"not a safetensors file ({size} bytes; truncated?)", path)
    (length,) = struct.unpack("<Q", start[:8])
    if start[8:9] != b"{":
        raise AvemoError("not a safetensors file", path)
    if 8 + length > size:
        raise AvemoError(f"truncated file: header needs {8 + length} bytes, file has {size}", path)


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import SafetensorError, safe_open

    _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except SafetensorError as error:
        if "incomplete" in str(error) or "not fully covered" in str(error):
            raise AvemoError("truncated file: its tensor data is incomplete", path) from None
        raise AvemoError(f"not a valid safetensors file ({error})", path) from None


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of an avemo checkpoint, without reading its tensors."""
    path = Path(path)
    metadata = _metadata(path)
    if METADATA_KEY not in metadata:
        raise AvemoError("a safetensors file, but not an avemo checkpoint (no avemo header)", path)
    try:
        header = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise AvemoError(f"corrupt avemo header ({error})", path) from None
    if not isinstance(header, dict) or not {"format", "builder", "kwargs"} <= set(header):
        raise AvemoError("corrupt avemo header (format, builder or kwargs missing)", path)
    if header["format"] != FORMAT:
        raise AvemoError(f"checkpoint format {header['format']} is not supported", path)
    return header


def load(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the module of an avemo checkpoint, fill its weights strictly, in eval mode.

    The module carries the file's header as ``module.avemo_header``.
    """
    from safetensors.torch import load_file

    path = Path(path)
    header = read_header(path)
    name = header["builder"]
    try:
        builder(name)
    except KeyError:
        raise AvemoError(f"unknown builder {name!r} (made by a newer avemo?)", path) from None
    try:
        module = build(name, **header["kwargs"])
    except (TypeError, ValueError, KeyError) as error:
        raise AvemoError(f"cannot rebuild {name!r} from the header ({error})", path) from None
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as error:  # safetensors raises its own error type for bad data
        raise AvemoError(f"cannot read the tensors ({error})", path) from None
    _load_state(module, tensors, path)
    module.avemo_config["preprocessing"] = header.get("preprocessing", {})
    module.avemo_header = header
    return module.to(device).eval()


def _load_state(module: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``load_state_dict`` that tolerates shared tensors stored once, else fails clearly."""
    expected = module.state_dict(keep_vars=True)
    # names that alias one stored tensor (safetensors keeps one name of each shared group)
    groups: dict[tuple, list[str]] = {}
    for key, value in expected.items():
        if value.numel():
            groups.setdefault((value.data_ptr(), value.shape, value.dtype), []).append(key)
    state = dict(tensors)
    for names in groups.values():
        stored = [n for n in names if n in state]
        for n in names:
            if stored and n not in state:
                state[n] = state[stored[0]]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensor(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]}")
        raise AvemoError("tensors do not match the model: " + "; ".join(parts), path)
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise AvemoError(
                f"tensor {key} has shape {tuple(state[key].shape)}, "
                f"the model needs {tuple(value.shape)}",
                path,
            )
    module.load_state_dict(state, strict=True)
