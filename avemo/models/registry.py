"""The builder registry: every network avemo can build, by name, and what kind of part it is.

A *builder* is a function ``(**kwargs) -> nn.Module`` registered under a name with the
*component* it makes (a visual or audio backbone, a fusion head, the expression model or a whole
pipeline). Checkpoints name their builder and its arguments (:mod:`avemo.models.checkpoint`), so
every network is rebuilt from its file alone. A fusion head also declares here how training fits
it to features (``train_arguments``): adding a head is one class and one ``@register`` line.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch only for annotations: the registry's names and roles load without it
    from torch import nn

# the parts of a pipeline: role -> the component a checkpoint of that role holds (the one map)
ROLES = {"visual": "visual_backbone", "audio": "audio_backbone", "head": "head"}
COMPONENTS = frozenset({*ROLES.values(), "expression", "pipeline"})
# modules whose import registers builders; imported on the first lookup of an unknown name
BUILDER_MODULES = (
    "avemo.models.backbones",
    "avemo.models.i3d",
    "avemo.models.heads",
    "avemo.models.jca_tbiom",
    "avemo.models.jmt",
    "avemo.models.mini_xception",
    "avemo.models.pipeline",
)


def role_of(component: str) -> str:
    """The pipeline role (visual, audio, head) of a component; other components keep their name."""
    return {c: r for r, c in ROLES.items()}.get(component, component)


def default_train_arguments(
    function: Callable, audio_dim: int, visual_dim: int, seq_len: int
) -> dict:
    """The builder arguments that fit a head to features of these widths and L clips: those of
    ``audio_dim``, ``visual_dim`` and ``seq_len`` that the builder accepts."""
    accepted = inspect.signature(function).parameters
    arguments = {"audio_dim": audio_dim, "visual_dim": visual_dim, "seq_len": seq_len}
    return {key: value for key, value in arguments.items() if key in accepted}


@dataclass(frozen=True)
class Builder:
    """A registered builder: a function ``(**kwargs) -> nn.Module`` and its component kind.

    ``train_arguments(audio_dim, visual_dim, seq_len) -> kwargs`` (heads only) fits the head to a
    feature cache; it raises ``ValueError`` with the reason when the features cannot fit.
    ``visual_features``: the R(2+1)D/R3D feature mode the head reads (``pool`` or ``flat``).
    """

    name: str
    component: str
    function: Callable[..., nn.Module]
    train_arguments: Callable[[int, int, int], dict] | None = None
    visual_features: str = "pool"
    default_seq_len: int | None = None


_BUILDERS: dict[str, Builder] = {}
_imported = False


def register(
    name: str,
    component: str,
    *,
    train_arguments: Callable[[int, int, int], dict] | None = None,
    visual_features: str = "pool",
    default_seq_len: int | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable]:
    """Decorator registering a builder function (or module class) under ``name``.

    The builder takes JSON-able keyword arguments and returns the module. It may supply the
    input preprocessing the module expects by setting ``module.avemo_preprocessing`` (a JSON-able
    dict, e.g. a visual backbone's clip size, frames, mean and std); :func:`build` records it.
    A head gets :func:`default_train_arguments` unless it gives its own ``train_arguments``.
    """
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}; one of {sorted(COMPONENTS)}")

    def decorator(function: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        existing = _BUILDERS.get(name)
        if existing is not None and existing.function.__qualname__ != function.__qualname__:
            raise ValueError(f"builder {name!r} is already registered")
        fit = train_arguments
        if fit is None and component == "head":
            def fit(a: int, v: int, length: int, _f=function) -> dict:
                return default_train_arguments(_f, a, v, length)
        _BUILDERS[name] = Builder(
            name, component, function, fit, visual_features, default_seq_len
        )
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


def builders(component: str | None = None) -> dict[str, Builder]:
    """All registered builders by name (of one ``component`` if given)."""
    _import_builders()
    return {
        name: entry
        for name, entry in sorted(_BUILDERS.items())
        if component is None or entry.component == component
    }


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


