"""The builder registry and avemo's one checkpoint format.

Every network avemo saves or imports is rebuilt from its file alone: a ``.safetensors`` file
whose metadata key ``"avemo"`` holds a JSON header naming the registered *builder* that makes the
module, the builder's keyword arguments, the input preprocessing the module expects, and the
weights' provenance (where they came from, whether they are trained at all)::

    {"format": 1, "builder": "jca", "component": "head", "kwargs": {...}, "preprocessing": {...},
     "provenance": {"trained": true, "source": "...", "source_sha256": "..." | null,
                    "licence": "..." | null, "training": {...} | null,
                    "created": "2024-01-01T00:00:00+00:00", "avemo_version": "0.1.0"}}

``build(name, **kwargs)`` makes a fresh module, ``save(module, path, provenance=...)`` writes one,
``read_header(path)`` reads the JSON without the tensors, ``load(path)`` rebuilds and fills it.
:class:`Pipeline` (builder ``pipeline``) bundles a visual backbone, an audio backbone and a fusion
head into the one module ``avemo annotate`` runs.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from avemo.errors import AvemoError

FORMAT = 1  # version of the checkpoint header
METADATA_KEY = "avemo"  # safetensors metadata key holding the JSON header
COMPONENTS = frozenset({"visual_backbone", "audio_backbone", "head", "expression", "pipeline"})
# modules whose import registers builders; imported on the first lookup of an unknown name
BUILDER_MODULES = (
    "avemo.backbones",
    "avemo.i3d",
    "avemo.heads",
    "avemo.jca_tbiom",
    "avemo.jmt",
    "avemo.expression",
)
UNTRAINED = "random initialisation"  # default provenance source of untrained weights


@dataclass(frozen=True)
class Builder:
    """A registered builder: a function ``(**kwargs) -> nn.Module`` and its component kind."""

    name: str
    component: str
    function: Callable[..., nn.Module]


_BUILDERS: dict[str, Builder] = {}
_imported = False


def register(name: str, component: str) -> Callable[[Callable[..., nn.Module]], Callable]:
    """Decorator registering a builder function under ``name``.

    The builder takes JSON-able keyword arguments and returns the module. It may supply the
    input preprocessing the module expects by setting ``module.avemo_preprocessing`` (a JSON-able
    dict, e.g. a visual backbone's clip size, frames, mean and std); :func:`build` records it.
    """
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}; one of {sorted(COMPONENTS)}")

    def decorator(function: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        existing = _BUILDERS.get(name)
        if existing is not None and existing.function.__qualname__ != function.__qualname__:
            raise ValueError(f"builder {name!r} is already registered")
        _BUILDERS[name] = Builder(name, component, function)
        return function

    return decorator


def _import_builders() -> None:
    """Import every builder module once; a module that is not there (yet) is skipped."""
    global _imported
    if _imported:
        return
    for module in BUILDER_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:  # the module exists but one of its imports is missing
                raise
    _imported = True


def builder(name: str) -> Builder:
    """The registered builder called ``name`` (``KeyError`` if there is none)."""
    if name not in _BUILDERS:
        _import_builders()
    return _BUILDERS[name]


def builders() -> dict[str, Builder]:
    """All registered builders by name."""
    _import_builders()
    return dict(sorted(_BUILDERS.items()))


def _jsonable(value: Any, what: str) -> Any:
    """``value`` after a JSON round trip (tuples become lists); ``ValueError`` if not JSON-able."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be JSON-able: {error}") from None


def build(name: str, **kwargs) -> nn.Module:
    """Build a fresh (untrained) module with the builder ``name`` and record its config.

    The returned module carries ``module.avemo_config = {"builder", "component", "kwargs",
    "preprocessing"}``, which :func:`save` writes into the checkpoint header.
    """
    try:
        entry = builder(name)
    except KeyError:
        raise ValueError(f"unknown builder {name!r}; known: {', '.join(builders())}") from None
    kwargs = _jsonable(kwargs, f"arguments of builder {name!r}")
    module = entry.function(**kwargs)
    preprocessing = _jsonable(
        getattr(module, "avemo_preprocessing", None) or {}, f"preprocessing of {name!r}"
    )
    module.avemo_config = {
        "builder": name,
        "component": entry.component,
        "kwargs": kwargs,
        "preprocessing": preprocessing,
    }
    return module


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

    from avemo.batch import atomic_path

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


def _preprocessing(module: nn.Module) -> dict:
    """The preprocessing recorded for a module made by :func:`build` (empty if none)."""
    return dict(getattr(module, "avemo_config", {}).get("preprocessing", {}))


class Pipeline(nn.Module):
    """Visual backbone + audio backbone + fusion head: clips and spectrograms -> valence, arousal.

    ``visual`` maps normalised clips ``B x 3 x T x H x W`` to ``B x Dv``, ``audio`` maps
    spectrograms ``B x 1 x 64 x 107`` to ``B x Da``, ``head`` maps ``(B x L x Da, B x L x Dv)`` to
    ``B x L x 2``. ``visual_preprocessing`` and ``audio_preprocessing`` describe the inputs the
    backbones expect (from their builders).
    """

    def __init__(self, visual: nn.Module, audio: nn.Module, head: nn.Module, seq_len: int):
        super().__init__()
        self.visual = visual
        self.audio = audio
        self.head = head
        self.seq_len = int(seq_len)
        self.visual_preprocessing = dict(
            getattr(visual, "avemo_config", {}).get("preprocessing", {})
        )
        self.audio_preprocessing = dict(getattr(audio, "avemo_config", {}).get("preprocessing", {}))
        self.avemo_preprocessing = {
            "visual": self.visual_preprocessing,
            "audio": self.audio_preprocessing,
            "seq_len": self.seq_len,
        }

    def encode_visual(self, clips: torch.Tensor) -> torch.Tensor:
        """Normalised clips ``B x 3 x T x H x W`` -> features ``B x Dv``."""
        return self.visual(clips)

    def encode_audio(self, specs: torch.Tensor) -> torch.Tensor:
        """Spectrograms ``B x 1 x 64 x 107`` -> features ``B x Da``."""
        return self.audio(specs)

    def fuse(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """Features ``B x L x Da`` and ``B x L x Dv`` -> ``B x L x 2`` (valence, arousal)."""
        return self.head(audio, visual)

    def forward(self, clips: torch.Tensor, specs: torch.Tensor) -> torch.Tensor:
        """Clips ``B x L x 3 x T x H x W``, spectrograms ``B x L x 1 x 64 x 107`` -> ``B x L x 2``.

        The L clips of each sequence go through the backbones as one batch of ``B * L``.
        """
        b, length = clips.shape[:2]
        visual = self.encode_visual(clips.flatten(0, 1)).view(b, length, -1)
        audio = self.encode_audio(specs.flatten(0, 1)).view(b, length, -1)
        return self.fuse(audio, visual)


@register("pipeline", "pipeline")
def pipeline(visual: dict, audio: dict, head: dict, seq_len: int) -> Pipeline:
    """A :class:`Pipeline` from three ``{"builder": name, "kwargs": {...}}`` specs."""
    parts = {}
    for role, spec, component in (
        ("visual", visual, "visual_backbone"),
        ("audio", audio, "audio_backbone"),
        ("head", head, "head"),
    ):
        if not isinstance(spec, dict) or not isinstance(spec.get("builder"), str):
            raise ValueError(f"{role} must be a dict {{'builder': name, 'kwargs': {{...}}}}")
        name = spec["builder"]
        kind = builder(name).component if name in builders() else None
        if kind != component:
            raise ValueError(f"{role} must be a {component} builder, got {name!r} ({kind})")
        parts[role] = build(name, **spec.get("kwargs", {}))
    return Pipeline(parts["visual"], parts["audio"], parts["head"], seq_len)
