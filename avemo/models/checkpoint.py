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
from typing import TYPE_CHECKING

from avemo.errors import AvemoError
from avemo.files import atomic_path
from avemo.models.registry import _jsonable, build, builder

if TYPE_CHECKING:  # torch is imported where tensors are made: read_header needs none
    import torch
    from torch import nn

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
        with safe_open(str(path), framework="numpy") as handle:  # no torch needed
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

    Before any memory is allocated, the module is built on the ``meta`` device and the file's
    tensor table (names, shapes, dtypes, byte ranges) is checked against it, so that a header
    asking for a huge module costs nothing when the file does not hold its weights: memory is
    bounded by the size of the file. The module carries the file's header as
    ``module.avemo_header``.
    """
    import torch
    from safetensors.torch import load_file

    path = Path(path)
    header = read_header(path)
    name = header["builder"]
    try:
        builder(name)
    except KeyError:
        raise AvemoError(f"unknown builder {name!r} (made by a newer avemo?)", path) from None
    stored = _tensor_table(path)
    try:  # the module's shape first, without memory: a header can ask for any size
        with torch.device("meta"):
            skeleton = build(name, **header["kwargs"])
    except (TypeError, ValueError, KeyError) as error:
        raise AvemoError(f"cannot rebuild {name!r} from the header ({error})", path) from None
    _check_tensors(skeleton, stored, path)
    del skeleton
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
    _mismatch(sorted(set(expected) - set(state)), sorted(set(state) - set(expected)), path)
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise AvemoError(
                f"tensor {key} has shape {tuple(state[key].shape)}, "
                f"the model needs {tuple(value.shape)}",
                path,
            )
    module.load_state_dict(state, strict=True)


# safetensors dtype names -> bytes per element (the ones safetensors' torch loader reads)
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}  # fmt: skip


def _tensor_table(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """The file's tensors as ``name -> (shape, dtype)``, from the safetensors header alone,
    after checking that every tensor's byte range matches its shape and dtype and lies inside
    the file."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        raw = handle.read(length)
        data_size = handle.seek(0, os.SEEK_END) - 8 - length
    try:
        table = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AvemoError(f"not a valid safetensors file (header: {error})", path) from None
    if not isinstance(table, dict):
        raise AvemoError("not a valid safetensors file (header is not a JSON object)", path)
    out = {}
    for name, entry in table.items():
        if name == "__metadata__":
            continue
        problem = _bad_entry(entry, data_size)
        if problem:
            raise AvemoError(f"tensor {name!r} in the file's table: {problem}", path)
        out[name] = (tuple(entry["shape"]), entry["dtype"])
    return out


def _bad_entry(entry, data_size: int) -> str | None:
    """Why a safetensors table entry is unusable (None if it is fine)."""
    if not isinstance(entry, dict):
        return "not an object"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_SIZES:
        return f"unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        return f"bad shape {shape!r}"
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)
    ):
        return f"bad data_offsets {offsets!r}"
    start, end = offsets
    numel = 1
    for n in shape:
        numel *= n
    if not 0 <= start <= end <= data_size:
        return f"bytes {start}-{end} lie outside the file's {data_size} data bytes"
    if end - start != numel * DTYPE_SIZES[dtype]:
        return f"{end - start} bytes cannot hold a {dtype} tensor of shape {tuple(shape)}"
    return None


def _check_tensors(
    skeleton: nn.Module, stored: dict[str, tuple[tuple[int, ...], str]], path: Path
) -> None:
    """Raise unless the file's tensors are exactly the (meta-device) module's: the same names
    (a tensor shared between names may be stored under any one of them) and shapes."""
    expected = skeleton.state_dict(keep_vars=True)
    groups: dict[int, list[str]] = {}  # names of one shared tensor (meta tensors have no address)
    for key, value in expected.items():
        groups.setdefault(id(value), []).append(key)
    covered = set(stored)
    for names in groups.values():
        if any(n in stored for n in names):
            covered.update(names)
    _mismatch(sorted(set(expected) - covered), sorted(set(stored) - set(expected)), path)
    for key, (shape, _) in stored.items():
        if tuple(expected[key].shape) != shape:
            raise AvemoError(
                f"tensor {key} has shape {shape}, the model needs {tuple(expected[key].shape)}",
                path,
            )


def _mismatch(missing: list[str], unexpected: list[str], path: Path) -> None:
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensor(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]}")
        raise AvemoError("tensors do not match the model: " + "; ".join(parts), path)
