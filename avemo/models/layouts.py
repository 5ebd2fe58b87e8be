"""The published checkpoints' layouts, and how their keys become avemo modules (SPEC 10).

A source file is read with ``torch.load(weights_only=True)`` (tensors only, never code), unwrapped
(``{'state_dict': ...}``, ``{'net': ...}``; a zip archive holding one checkpoint), stripped of
DataParallel's ``module.`` prefix, then renamed key by key with the per-format tables below:
every key must be either mapped into an avemo module or listed as deliberately unused; every
tensor of the avemo module must be filled. Anything else is an error that lists the offending
keys, so nothing is silently left at random initialisation. :func:`fill_layout` gives the filled
modules; writing them with provenance is ``avemo weights import`` (:mod:`avemo.convert`).
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from avemo.errors import AvemoError, InputError
from avemo.files import sha256_file
from avemo.metrics import DIMENSIONS  # option ``dimension``: what a one-output CVPRW file regresses
from avemo.models.registry import build

if TYPE_CHECKING:  # torch is imported where tensors are read: the format names need none
    import torch

SUFFIX = ".safetensors"
WRAPPER_KEYS = ("state_dict", "net", "model_state_dict", "model")  # checked in this order
PARALLEL_PREFIX = "module."  # torch.nn.DataParallel / DistributedDataParallel
CHECKPOINT_SUFFIXES = (".pth.tar", ".pth", ".pt", ".t7", ".tar", ".ckpt", ".bin")  # in archives
MAX_LISTED = 8  # keys named in an error message per kind of problem
# Zip archives (and zip-format torch files) are checked before anything is decompressed, so that a
# crafted file costs bounded memory: published checkpoints are < 1 GB and compress about 1.1x.
MAX_UNPACKED_BYTES = 4 << 30  # declared size of all members together
MAX_RATIO = 50  # declared size / compressed size of any deflated member


# --- reading source files ----------------------------------------------------------------------


def _numpy_globals() -> list:
    """Numpy scalar types training scripts store next to the weights (epoch, best score)."""
    import numpy as np

    scalar = np._core.multiarray.scalar
    return [
        scalar,
        (scalar, "numpy.core.multiarray.scalar"),  # how numpy 1.x pickles name it
        np.dtype,
        *(type(np.dtype(kind)) for kind in ("float64", "float32", "int64", "int32", "bool")),
    ]


_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([A-Za-z_][\w.]*) was not an allowed global")


def _torch_load(data: bytes | Path, where: Path) -> object:
    """``torch.load(weights_only=True)`` with errors turned into one clear line."""
    import torch

    handle = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for foreign or damaged bytes
        text = str(error)
        found = _UNSAFE_GLOBAL.search(text) if isinstance(error, pickle.UnpicklingError) else None
        if found is None:
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            detail = (lines[0][:160] + ", ...") if lines else type(error).__name__
            raise InputError(f"not a readable PyTorch checkpoint ({detail})", where) from None
        raise InputError(
            f"holds Python objects ({found[1]}, ...) besides tensors; avemo loads tensors only "
            "(weights_only): re-save the state_dict() of the original model with torch.save",
            where,
        ) from None


def _check_zip(archive: zipfile.ZipFile, path: Path) -> None:
    """Refuse an archive whose members would unpack to more than ``MAX_UNPACKED_BYTES`` or that
    compress implausibly well (a zip bomb), from the sizes the archive declares."""
    total = 0
    for info in archive.infolist():
        total += info.file_size
        packed = max(info.compress_size, 1)
        if info.compress_type != zipfile.ZIP_STORED and info.file_size / packed > MAX_RATIO:
            raise InputError(
                f"member {info.filename!r} would unpack {info.file_size / packed:.0f}x its "
                f"{info.compress_size} bytes (a zip bomb?); refused",
                path,
            )
    if total > MAX_UNPACKED_BYTES:
        raise InputError(
            f"the archive would unpack to {total / 2**30:.1f} GiB (more than "
            f"{MAX_UNPACKED_BYTES / 2**30:.0f} GiB); refused",
            path,
        )


def _read_member(archive: zipfile.ZipFile, name: str, path: Path) -> bytes:
    """A member's bytes, read no further than its declared size (which may lie)."""
    info = archive.getinfo(name)
    with archive.open(info) as stream:
        data = stream.read(info.file_size + 1)
    if len(data) > info.file_size:
        raise InputError(f"member {name!r} is larger than the archive says; refused", path)
    return data


def _archive_member(path: Path, member: str | None) -> tuple[bytes, str] | None:
    """The checkpoint inside a plain zip archive (TSAV's download), or None for other files."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            _check_zip(archive, path)
            names = [n for n in archive.namelist() if not n.endswith("/")]
            if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
                return None  # a zip-format torch.save file, not an archive of checkpoints
            if member is None:
                found = [
                    n
                    for n in names
                    if n.lower().endswith(CHECKPOINT_SUFFIXES) and "__MACOSX" not in n
                ]
                if len(found) != 1:
                    listing = ", ".join(found or names[:MAX_LISTED]) or "nothing"
                    raise InputError(
                        f"a zip archive with {len(found)} checkpoint files ({listing}): "
                        "pick one with --member",
                        path,
                    )
                member = found[0]
            elif member not in names:
                raise InputError(f"the archive has no member {member!r}", path)
            return _read_member(archive, member, path), member
    except zipfile.BadZipFile as error:
        raise InputError(f"corrupt zip archive ({error})", path) from None


def _find_state_dict(obj: object, where: Path | None) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict in a loaded object, and the wrapper key it was found under."""
    import torch

    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj), None
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner:
                tensors = {k: v for k, v in inner.items() if isinstance(v, torch.Tensor)}
                others = sorted(str(k) for k in inner if k not in tensors)
                if others:
                    raise InputError(
                        f"{key!r} holds non-tensor entries ({', '.join(others[:MAX_LISTED])})",
                        where,
                    )
                return tensors, key
        keys = ", ".join(sorted(map(str, obj))[:MAX_LISTED]) or "none"
        raise InputError(f"no state dict found (top-level keys: {keys})", where)
    raise InputError(f"no state dict found (the file holds a {type(obj).__name__})", where)


@dataclass
class Source:
    """A source checkpoint as read: flat state dict, where it came from, its hash."""

    path: Path
    state: dict[str, torch.Tensor]
    sha256: str
    member: str | None = None  # the checkpoint inside a zip archive
    wrapper: str | None = None  # the key the state dict was found under
    parallel: bool = False  # keys carried DataParallel's `module.` prefix

    @property
    def label(self) -> str:
        """The file (and archive member) name, for messages and provenance."""
        return self.path.name + (f"!{self.member}" if self.member else "")


def read_source(path: str | os.PathLike, *, member: str | None = None) -> Source:
    """Read a published checkpoint: tensors only, unwrapped, ``module.`` prefixes removed."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", path)
    if path.is_dir():
        raise InputError("is a folder, not a checkpoint file", path)
    if path.stat().st_size == 0:
        raise InputError("empty file", path)
    digest = sha256_file(path)
    inner = _archive_member(path, member)
    if inner is None:
        if member is not None:
            raise AvemoError("--member is only for zip archives of checkpoints", path)
        obj = _torch_load(path, path)
    else:
        data, member = inner
        obj = _torch_load(data, path)
    state, wrapper, parallel = unwrap(obj, path)
    return Source(path, state, digest, member, wrapper, parallel)


def unwrap(
    obj: object, where: Path | None = None
) -> tuple[dict[str, torch.Tensor], str | None, bool]:
    """The flat state dict in what ``torch.load`` gave, without DataParallel's ``module.``.

    Also the wrapper key it was under (``'net'``, ``'state_dict'``, ...) and whether its keys
    carried the prefix.
    """
    raw, wrapper = _find_state_dict(obj, where)
    parallel = any(k.startswith(PARALLEL_PREFIX) for k in raw)
    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        name = key.removeprefix(PARALLEL_PREFIX)
        if name in state:
            raise InputError(f"key {name!r} appears with and without 'module.'", where)
        state[name] = value
    return state, wrapper, parallel


# --- layouts: the key-mapping tables -----------------------------------------------------------

Rule = tuple[str, str]  # (regex fully matching a source key, replacement: an avemo key)


@dataclass(frozen=True)
class Part:
    """One avemo module filled from a source file."""

    role: str  # visual, audio or head
    builder: str
    kwargs: dict
    rules: tuple[Rule, ...]
    # avemo key -> (what is done, function on the source tensor)
    adapt: Mapping[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = field(
        default_factory=dict
    )
    # (regex on avemo keys, note): tensors the source does not have, filled on purpose
    untrained: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Layout:
    """How one kind of source file becomes avemo modules."""

    format: str
    description: str
    parts: tuple[Part, ...]
    ignored: tuple[tuple[str, str], ...] = ()  # (regex on source keys, why it is unused)
    aliases: tuple[Rule, ...] = ()  # (regex, canonical key): duplicate names of one tensor
    notes: tuple[str, ...] = ()
    trained: bool = True  # False when a part keeps untrained tensors (``Part.untrained``)
    dimension: str | None = None  # a one-output CVPRW head: the dimension it was imported for


def _prefixed(prefix: str, exclude: Iterable[str] = ()) -> Rule:
    """A rule moving every key under ``prefix`` to the same key without it (but ``exclude``)."""
    skip = "".join(f"(?!{re.escape(e)})" for e in exclude)
    return (re.escape(prefix) + skip + r"(.+)", r"\1")


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    value = state.get(key)
    return None if value is None else tuple(value.shape)


# visual backbones: torchvision names (stem.*, layer1-4.*); avemo.backbones keeps them
def _torchvision_arch(state: Mapping[str, torch.Tensor], stem_key: str) -> str | None:
    """``r2plus1d_18`` or ``r3d_18`` from the first stem convolution's kernel."""
    shape = _shape(state, stem_key)
    if shape is None or len(shape) != 5:
        return None
    if shape[2:] == (1, 7, 7) and shape[0] == 45:  # (2+1)D: spatial 1x7x7 then temporal 3x1x1
        return "r2plus1d_18"
    if shape[2:] == (3, 7, 7) and shape[0] == 64:
        return "r3d_18"
    return None


def _layout_torchvision(state, options) -> Layout:
    arch = options.get("arch") or _torchvision_arch(state, "stem.0.weight")
    if arch not in {"r2plus1d_18", "r3d_18"}:
        raise ValueError(
            f"stem.0.weight {_shape(state, 'stem.0.weight')} is neither R(2+1)D-18's "
            "(45, 3, 1, 7, 7) nor R3D-18's (64, 3, 3, 7, 7)"
        )
    features = options.get("features", "pool")
    return Layout(
        "torchvision",
        f"torchvision {arch} (Kinetics-400 classifier fc.* unused)",
        (Part("visual", arch, {"features": features}, (_prefixed("", ["fc."]),)),),
        ignored=((r"fc\..+", "the 400-class Kinetics classifier"),),
    )


def _layout_tsav(state, options) -> Layout:
    from avemo.models.backbones import rgb_stem

    stem = "video_model.r2plus1d.stem.0.weight"
    channels = (_shape(state, stem) or (0, 0))[1]
    adapt = {}
    notes = []
    if channels > 3:
        adapt["stem.0.weight"] = (f"RGB filters of the {channels}-channel stem", rgb_stem)
        notes.append(f"visual stem: kept weight[:, :3] of {channels} input channels (RGB + mask)")
    features = options.get("features", "pool")
    return Layout(
        "tsav",
        "TSAV (Kuhnke et al., ABAW 2020): R(2+1)D-18 visual + ResNet18 audio",
        (
            Part(
                "visual",
                "r2plus1d_18",
                {"features": features},
                (_prefixed("video_model.r2plus1d.", ["fc."]),),
                adapt,
            ),
            Part("audio", "audio_resnet18", {}, (_prefixed("audio_model.resnet.", ["fc."]),)),
        ),
        ignored=(
            (r"fc\.1\..+", "TSAV's own 17-output expression/AU/VA head"),
            (r"(video_model\.r2plus1d|audio_model\.resnet)\.fc\..+", "the backbones' classifiers"),
        ),
        notes=tuple(notes),
    )


# I3D: pytorch-i3d names (Conv3d_1a_7x7.conv3d.weight, Mixed_3b.b0.bn.*); avemo.i3d keeps them
I3D_KEY = r"(Conv3d_\w+|Mixed_\w+)\.(.+)"
I3D_CLASSIFIER = "the action classifier (logits.*), unused for features"


def _layout_pytorch_i3d(state, options) -> Layout:
    return Layout(
        "pytorch-i3d",
        "pytorch-i3d InceptionI3d (RGB)",
        (Part("visual", "i3d", {}, ((I3D_KEY, r"i3d.\1.\2"),)),),
        ignored=((r"logits\..+", I3D_CLASSIFIER),),
    )


def _tcn_kwargs(state: Mapping[str, torch.Tensor], prefix: str) -> dict:
    """The TCN's level widths and kernel, read off its first convolution of every level."""
    channels, kernel = [], None
    while (shape := _shape(state, f"{prefix}{len(channels)}.conv1.weight_v")) or (
        shape := _shape(state, f"{prefix}{len(channels)}.net.0.weight_v")
    ):
        channels.append(shape[0])
        kernel = shape[2]
    if not channels:
        raise ValueError(f"no TCN levels ({prefix}N.conv1.weight_v) found")
    return {"channels": channels, "kernel": kernel}


def _layout_cvpr_visual(state, options) -> Layout:
    return Layout(
        "jca-cvpr",
        "CVPRW JCA visual backbone: I3D + TCN (I3D_WSDDA)",
        (
            Part(
                "visual",
                "i3d_tcn",
                _tcn_kwargs(state, "temporal.network."),
                ((r"i3d_WSDDA\." + I3D_KEY, r"i3d.\1.\2"), (r"temporal\.(.+)", r"temporal.\1")),
            ),
        ),
        ignored=(
            (r"i3d_WSDDA\.logits\..+", I3D_CLASSIFIER),
            (r"(regressor|predictions)\..+", "the reference's per-clip regressors, unused"),
        ),
        # the reference registers every weight-normed convolution twice
        aliases=(
            (r"temporal\.network\.(\d+)\.net\.0\.(.+)", r"temporal.network.\1.conv1.\2"),
            (r"temporal\.network\.(\d+)\.net\.4\.(.+)", r"temporal.network.\1.conv2.\2"),
        ),
    )


# the joint cross-attention's own weights (SPEC 5.1): the reference's names are avemo's
JCA_ATTENTION = r"(encoder[12]|affine_[av]|W_[ac]?[av]|W_h[av])\.(weight|bias)"
JCA_REGRESSOR_MODES = ("reference", "retrain")  # option ``regressor``; the first is the default
JCA_COMPAT_NOTE = (
    "compatibility mode (regressor_input='reference'): the regressor reads [V | X_att,v] "
    "({} inputs) as the reference code does, not the paper's [X_att,a | X_att,v]; the attended "
    "audio is unused"
)
JCA_RETRAIN_NOTE = (
    "the reference regresses [V | X_att,v] ({} inputs), avemo's paper JCA [X_att,a | X_att,v] "
    "({} inputs): the regressor is untrained and must be trained (avemo train)"
)
JCA_ONE_DIMENSION_NOTE = (
    "the CVPRW file regresses {} only (the reference trains one model per dimension): the "
    "{} regressor is untrained and must be trained (avemo train)"
)


def _jca_kwargs(state: Mapping[str, torch.Tensor]) -> dict:
    """The JCA's sizes read off the weights: feature sizes, L, projection and attention widths."""
    proj, audio = _shape(state, "encoder1.weight") or (0, 0)
    visual = (_shape(state, "encoder2.weight") or (0, 0))[1]
    seq_len = (_shape(state, "affine_a.weight") or (0,))[0]
    attn = (_shape(state, "W_a.weight") or (0,))[0]
    if not all((proj, audio, visual, seq_len, attn)):
        raise ValueError("encoder1, encoder2, affine_a or W_a missing")
    return {
        "audio_dim": audio,
        "visual_dim": visual,
        "seq_len": seq_len,
        "proj_dim": proj,
        "attn_dim": attn,
    }


def _layout_jca(fmt: str, description: str, state, options) -> Layout:
    """A reference JCA (CVPRW fusion file, journal ``cam.CAM``) as avemo's ``jca``.

    By default in compatibility mode (``regressor_input="reference"``): every weight kept, the
    regressor reading ``[V | X_att,v]`` as the reference's. The journal file has ``vregressor``
    and ``aregressor``; the CVPRW file one ``regressor``, which the reference trains for one
    dimension (one output: ``dimension`` says which, the other dimension's regressor stays
    untrained) or, with two outputs, for both. ``regressor="retrain"`` keeps the attention only,
    in the paper's JCA, with an untrained regressor.
    """
    kwargs = _jca_kwargs(state)
    separate = "vregressor.0.weight" in state
    names = ("vregressor", "aregressor") if separate else ("regressor",)
    inputs = (_shape(state, f"{names[0]}.0.weight") or (0, 0))[1]
    outputs = (_shape(state, f"{names[0]}.2.weight") or (0,))[0]
    reference = rf"({'|'.join(names)})\.(\d+)\.(weight|bias)"
    attention = (JCA_ATTENTION, r"\1.\2")
    mode = options.get("regressor") or JCA_REGRESSOR_MODES[0]
    dimension = options.get("dimension")
    if mode not in JCA_REGRESSOR_MODES:
        raise ValueError(f"regressor must be one of {', '.join(JCA_REGRESSOR_MODES)}, not {mode!r}")
    if dimension not in (None, *DIMENSIONS):
        raise ValueError(f"dimension must be valence or arousal, not {dimension!r}")
    if mode == "retrain":
        why = JCA_RETRAIN_NOTE.format(inputs, 2 * kwargs["proj_dim"])
        return Layout(
            fmt,
            description + ", attention only",
            (Part("head", "jca", kwargs, (attention,), untrained=((r"regressor\..+", why),)),),
            ignored=((reference, "the reference's regressor"),),
            trained=False,
        )
    kwargs["regressor_input"] = "reference"
    notes = (JCA_COMPAT_NOTE.format(inputs),)
    description += ", compatibility mode"
    if separate or outputs == 2:
        if dimension is not None:
            raise ValueError(
                f"dimension is for a one-output CVPRW regressor; this file has {outputs}"
            )
        kwargs["regressors"] = "separate" if separate else "joint"
        rules = (attention, (reference, r"\1.\2.\3"))
        return Layout(fmt, description, (Part("head", "jca", kwargs, rules),), notes=notes)
    if outputs != 1:
        raise ValueError(f"the regressor has {outputs} outputs: avemo takes 1 or 2")
    if dimension is None:
        raise ValueError(
            "this CVPRW fusion file regresses one dimension (regressor.2 has 1 output; the "
            "reference trains valence and arousal in separate runs): say which with dimension="
            "'valence' or 'arousal' (--dimension; the other dimension's regressor stays "
            "untrained), or import the attention only with regressor='retrain' (--regressor "
            "retrain)"
        )
    other = DIMENSIONS[1 - DIMENSIONS.index(dimension)]
    kwargs["regressors"] = "separate"
    rules = (attention, (r"regressor\.(\d+)\.(weight|bias)", rf"{dimension[0]}regressor.\1.\2"))
    why = JCA_ONE_DIMENSION_NOTE.format(dimension, other)
    part = Part("head", "jca", kwargs, rules, untrained=((rf"{other[0]}regressor\..+", why),))
    return Layout(
        fmt, f"{description}, {dimension} only", (part,), notes=notes, trained=False,
        dimension=dimension,
    )  # fmt: skip


def one_output_jca(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict is a reference JCA with one one-output ``regressor`` (the CVPRW code
    trains one such file per dimension)."""
    return "encoder1.weight" in state and (_shape(state, "regressor.2.weight") or (0,))[0] == 1


def _layout_jca_cvpr(state, options) -> Layout:
    if any(k.startswith(("i3d_WSDDA.", "temporal.")) for k in state):
        return _layout_cvpr_visual(state, options)
    if "encoder1.weight" in state:
        return _layout_jca("jca-cvpr", "CVPRW JCA fusion head (CAM)", state, options)
    raise ValueError(
        "neither the CVPRW I3D+TCN file (i3d_WSDDA.*, temporal.*) nor its fusion head "
        "(encoder1.*, affine_a.*, regressor.*)"
    )


def _layout_jca_journal(state, options) -> Layout:
    if "encoder1.weight" in state:  # SPEC 5.1: the CAM of the journal code (L = 16)
        description = "journal JCA, joint cross-attention layout (cam.CAM)"
        return _layout_jca("jca-journal", description, state, options)
    if any(k.startswith("coattn.dcn_layers.") for k in state):  # SPEC 5.2
        return _layout_jca_tbiom(state, options)
    raise ValueError(
        "neither the joint cross-attention layout (encoder1.weight, SPEC 5.1) nor the released "
        "orig_cam layout (coattn.dcn_layers.*, SPEC 5.2)"
    )


# the released journal JCA (orig_cam.CAM, SPEC 5.2): the reference's names are avemo's
TBIOM_KEYS = (
    r"video_attn\.attn\.affine_(audio|video|v|g|h|feat)\.(weight|bias)",
    r"coattn\.dcn_layers\.\d+\.dense_coattn\.(query|key[12]|value[12])_linear\.(weight|bias)",
    r"coattn\.dcn_layers\.\d+\.linears\.[01]\.0\.(weight|bias)",
    r"Joint\.(rnn\.\w+|init_hidden|linear\.(weight|bias))",
    r"[va]regressor\.[03]\.(weight|bias)",
)


def _layout_jca_tbiom(state, options) -> Layout:
    audio_dim = (_shape(state, "video_attn.attn.affine_audio.weight") or (0, 0))[1]
    positions = (_shape(state, "video_attn.attn.affine_v.weight") or (0,))[0]
    key = "coattn.dcn_layers.0.dense_coattn.key1_linear.weight"
    seq_len = (_shape(state, key) or (0,))[0]
    joint_dim = (_shape(state, "Joint.linear.weight") or (0,))[0]
    layers = len({k.split("_l")[-1].split("_")[0] for k in state if k.startswith("Joint.rnn.")})
    hidden = (_shape(state, "vregressor.0.weight") or (0,))[0]
    if not all((audio_dim, positions, seq_len, joint_dim, layers, hidden)):
        raise ValueError("video_attn.attn, coattn.dcn_layers.0, Joint or vregressor incomplete")
    kwargs = {
        "audio_dim": audio_dim,
        "positions": positions,
        "seq_len": seq_len,
        "joint_dim": joint_dim,
        "lstm_layers": layers,
        "hidden": hidden,
    }
    rules = tuple((pattern, r"\g<0>") for pattern in TBIOM_KEYS)
    return Layout(
        "jca-journal",
        "journal JCA as released (orig_cam.CAM)",
        (Part("head", "jca_tbiom", kwargs, rules),),
    )


# JMT (SPEC 5.3): the reference's names are avemo's; its final_encoder is never used
def _layout_jmt(state, options) -> Layout:
    from avemo.models import jmt

    prefix = "mm_transformer."
    dim = (_shape(state, prefix + "out_layer_pv.weight") or (0,))[0]
    layers = len(
        {k.split(".")[3] for k in state if k.startswith(prefix + "visual_encoder.layers.")}
    )
    ffn = prefix + "visual_encoder.layers.0.feed_forward.0.weight"
    ffn_dim = (_shape(state, ffn) or (0,))[0]
    hidden = (_shape(state, "vregressor.0.weight") or (0,))[0]
    if not all((dim, layers, ffn_dim, hidden)):
        raise ValueError("out_layer_pv, visual_encoder or vregressor missing")
    mode = "fc" if prefix + "out_layer1.weight" in state else "self_attention"
    kwargs = {
        "dim": dim,
        "mode": mode,
        "heads": int(options.get("heads") or jmt.HEADS),  # not recorded in the weights
        "layers": layers,
        "ffn_dim": ffn_dim,
        "hidden": hidden,
    }
    return Layout(
        "jmt",
        f"JMT ({mode} output)",
        (
            Part(
                "head",
                "jmt",
                kwargs,
                (
                    (
                        r"mm_transformer\.(?!final_encoder\.).+|[va]regressor\.[03]\.(weight|bias)",
                        r"\g<0>",
                    ),
                ),
            ),
        ),
        ignored=((r"mm_transformer\.final_encoder\..+", "the reference's unused final_encoder"),),
        notes=(f"attention heads: {kwargs['heads']} (not recorded in the file)",),
    )


# the options each format takes (``import_weights(..., **options)``)
OPTIONS = {
    "torchvision": {"features", "arch"},
    "tsav": {"features"},
    "pytorch-i3d": set(),
    "jca-cvpr": {"regressor", "dimension"},
    "jca-journal": {"regressor"},
    "jmt": {"heads"},
}
LAYOUTS: dict[str, Callable[[Mapping[str, torch.Tensor], dict], Layout]] = {
    "torchvision": _layout_torchvision,
    "tsav": _layout_tsav,
    "pytorch-i3d": _layout_pytorch_i3d,
    "jca-cvpr": _layout_jca_cvpr,
    "jca-journal": _layout_jca_journal,
    "jmt": _layout_jmt,
}
FORMATS = tuple(sorted(LAYOUTS))  # the formats `avemo weights import --format` takes


def detect_format(state: Mapping[str, torch.Tensor]) -> str | None:
    """The import format a state dict looks like (by its characteristic keys), or None."""
    keys = set(state)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has("video_model.r2plus1d.") or has("audio_model.resnet."):
        return "tsav"
    if has("mm_transformer."):
        return "jmt"
    if has("i3d_WSDDA.") or has("temporal.network."):
        return "jca-cvpr"  # the I3D+TCN visual backbone
    if "encoder1.weight" in keys:  # a reference JCA: CVPRW (one regressor) or journal (two)
        return "jca-journal" if "vregressor.0.weight" in keys else "jca-cvpr"
    if has("coattn.dcn_layers."):
        return "jca-journal"
    if "Conv3d_1a_7x7.conv3d.weight" in keys:
        return "pytorch-i3d"
    if "stem.0.weight" in keys:
        return "torchvision"
    return None


# --- filling avemo modules strictly ------------------------------------------------------------


def _listing(keys: list[str], describe: Callable[[str], str] = str) -> str:
    shown = ", ".join(describe(k) for k in keys[:MAX_LISTED])
    return shown + (f" and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else "")


def _dims(shape: Iterable[int]) -> str:
    return "x".join(map(str, shape)) or "scalar"


@dataclass
class Mapped:
    """A source state dict split over a layout's parts, with what was left out and why."""

    parts: dict[str, dict[str, torch.Tensor]]
    origin: dict[str, dict[str, str]]  # per part: avemo key -> source key
    ignored: dict[str, list[str]]  # reason -> source keys
    unknown: list[str]


def map_keys(state: Mapping[str, torch.Tensor], layout: Layout) -> Mapped:
    """Rename every source key by the layout's tables (first matching rule wins)."""
    import torch

    canonical = dict(state)
    problems = []
    for pattern, target in layout.aliases:
        for key in list(canonical):
            match = re.fullmatch(pattern, key)
            if not match:
                continue
            main = match.expand(target)
            if main in state and not torch.equal(state[main], state[key]):
                problems.append(f"{key} differs from {main}")
            elif main not in state:
                canonical[main] = state[key]
            canonical.pop(key)
    if problems:
        raise ValueError("aliased tensors disagree: " + _listing(problems))
    mapped = Mapped({p.role: {} for p in layout.parts}, {p.role: {} for p in layout.parts}, {}, [])
    for key, value in canonical.items():
        reason = next((why for pattern, why in layout.ignored if re.fullmatch(pattern, key)), None)
        if reason is not None:
            mapped.ignored.setdefault(reason, []).append(key)
            continue
        for part in layout.parts:
            target = next(
                (
                    m.expand(replacement)
                    for pattern, replacement in part.rules
                    if (m := re.fullmatch(pattern, key))
                ),
                None,
            )
            if target is not None:
                if target in mapped.parts[part.role]:
                    other = mapped.origin[part.role][target]
                    raise ValueError(f"{key} and {other} both map to {part.role} {target}")
                mapped.parts[part.role][target] = value
                mapped.origin[part.role][target] = key
                break
        else:
            mapped.unknown.append(key)
    return mapped


def _weight_norm_targets(expected: Mapping[str, torch.Tensor], tensors: dict) -> None:
    """Old-style ``weight_g``/``weight_v`` into whatever the avemo module stores (in place).

    New-style parametrisations hold them as ``parametrizations.weight.original0/1``; a plain
    ``weight`` gets ``g * v / ||v||`` (norm over every dimension but 0).
    """
    import torch

    for key in [k for k in tensors if k.endswith(".weight_g")]:
        base = key[: -len(".weight_g")]
        v_key = base + ".weight_v"
        if v_key not in tensors or v_key in expected or key in expected:
            continue
        g, v = tensors.pop(key), tensors.pop(v_key)
        if base + ".parametrizations.weight.original0" in expected:
            tensors[base + ".parametrizations.weight.original0"] = g
            tensors[base + ".parametrizations.weight.original1"] = v
        else:
            dims = tuple(range(1, v.dim()))
            tensors[base + ".weight"] = v * (
                g / torch.linalg.vector_norm(v, dim=dims, keepdim=True)
            )


def fill(module: torch.nn.Module, part: Part, tensors: dict[str, torch.Tensor]) -> list[str]:
    """Load ``tensors`` into ``module`` strictly; the notes on what was adapted or kept.

    Raises ``ValueError`` listing unknown keys, missing keys and shape mismatches together.
    ``num_batches_tracked`` counters absent from old checkpoints are set to 0 (they do not
    affect evaluation); tensors matched by ``part.untrained`` keep their initialisation.
    """
    import torch

    expected = module.state_dict()
    tensors = dict(tensors)
    notes = []
    for key, (what, function) in part.adapt.items():
        if key in tensors:
            tensors[key] = function(tensors[key])
            notes.append(f"{part.role} {key}: {what}")
    _weight_norm_targets(expected, tensors)
    missing = [k for k in expected if k not in tensors]
    counters = [k for k in missing if k.endswith("num_batches_tracked")]
    for key in counters:
        tensors[key] = torch.zeros(expected[key].shape, dtype=expected[key].dtype)
    kept = [k for k in missing if any(re.fullmatch(p, k) for p, _ in part.untrained)]
    for key in kept:
        tensors[key] = expected[key]
    for pattern, why in part.untrained:
        if any(re.fullmatch(pattern, k) for k in kept):
            notes.append(f"{part.role} {pattern}: {why}")
    missing = [k for k in missing if k not in counters and k not in kept]
    unknown = [k for k in tensors if k not in expected]
    mismatched = [
        k for k in tensors if k in expected and tuple(tensors[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} key(s) avemo's {part.builder} lacks: {_listing(unknown)}")
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if mismatched:

        def describe(k: str) -> str:
            return f"{k} (file {_dims(tensors[k].shape)}, avemo {_dims(expected[k].shape)})"

        problems.append(f"{len(mismatched)} shape mismatch(es): {_listing(mismatched, describe)}")
    if problems:
        raise ValueError("; ".join(problems))
    state, seen = {}, set()
    for key in expected:
        value = tensors[key].to(dtype=expected[key].dtype).contiguous()
        if value.data_ptr() in seen:  # two avemo tensors must not share memory
            value = value.clone()
        seen.add(value.data_ptr())
        state[key] = value
    # a module built on the meta device takes the tensors themselves
    assign = any(value.is_meta for value in expected.values())
    module.load_state_dict(state, strict=True, assign=assign)
    return notes


def _on_meta(module: torch.nn.Module) -> bool:
    return any(t.is_meta for t in (*module.parameters(), *module.buffers()))


def build_filled(part: Part, tensors: dict[str, torch.Tensor]) -> tuple[torch.nn.Module, list]:
    """``part``'s module holding ``tensors``, and the notes of :func:`fill`.

    Every weight is overwritten, so the module is built on the meta device (no initialisation,
    no memory) unless the part keeps some initialised tensors (``Part.untrained``), or the module
    holds tensors that a state dict does not carry.
    """
    import torch

    if not part.untrained:
        with torch.device("meta"):
            module = build(part.builder, **part.kwargs)
        notes = fill(module, part, tensors)
        if not _on_meta(module):
            return module, notes
    module = build(part.builder, **part.kwargs)
    return module, fill(module, part, tensors)


def fill_layout(
    state: Mapping[str, torch.Tensor], fmt: str, where: Path | None = None, **options
) -> tuple[Layout, Mapped, list[tuple[Part, torch.nn.Module, list[str]]]]:
    """A reference state dict (``module.`` stripped) in avemo modules, by ``fmt``'s tables.

    Returns the layout, how the keys were mapped, and per part its filled module and notes.
    Every problem is an :class:`AvemoError` naming ``where`` and the keys.
    """
    if fmt not in LAYOUTS:
        raise AvemoError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    unused = sorted(set(options) - OPTIONS[fmt])
    if unused:
        raise AvemoError(f"option {', '.join(unused)} does not apply to format {fmt}")
    looks_like = detect_format(state)
    if looks_like not in {fmt, None}:
        raise InputError(f"not a {fmt} checkpoint: it looks like --format {looks_like}", where)
    try:
        layout = LAYOUTS[fmt](state, options)
        mapped = map_keys(state, layout)
    except ValueError as error:
        raise InputError(f"cannot import as {fmt}: {error}", where) from None
    if mapped.unknown:
        raise InputError(
            f"{len(mapped.unknown)} key(s) of this {fmt} file have no place in avemo "
            f"({layout.description}): {_listing(mapped.unknown)}",
            where,
        )
    filled = []
    for part in layout.parts:
        tensors = mapped.parts[part.role]
        if not tensors:
            raise InputError(f"no {part.role} weights found for {part.builder}", where)
        try:
            module, notes = build_filled(part, tensors)
        except ValueError as error:
            raise InputError(
                f"does not fit {part.role} {part.builder} ({layout.description}): {error}", where
            ) from None
        filled.append((part, module, notes))
    return layout, mapped, filled


def state_dicts(checkpoint: Mapping, fmt: str, **options) -> dict[str, dict[str, torch.Tensor]]:
    """A reference checkpoint already in memory as avemo state dicts, one per part.

    ``checkpoint`` is what ``torch.load`` gives for a published file (wrapped in ``'net'`` or
    ``'state_dict'`` or not, with ``module.`` prefixes or not). The result maps each part's role
    (``"visual"``, ``"audio"``, ``"head"``) to a state dict that the avemo module of that part
    loads with ``strict=True``; it goes through the same key tables and checks as
    :func:`import_weights` (unknown, missing or mis-shaped keys are an :class:`AvemoError`), so
    this is the one place where reference layouts are converted. ``options`` as there.
    """
    state, _, _ = unwrap(checkpoint)
    _, _, filled = fill_layout(state, fmt, **options)
    return {part.role: module.state_dict() for part, module, _ in filled}
