"""Fusion-head training on cached features: the papers' recipes, CCC loss, k-fold CV (SPEC 7).

The backbones are frozen, so a head trains on the features ``avemo extract`` cached. Each video's
clips are tiled densely into L-clip sequences (SPEC 2, :func:`avemo.clips.sequences`): every
frame ends exactly one clip of one sequence, so an epoch sees every labelled frame once. Frames
labelled -5 and clips past the end of the video are dropped from the loss; the loss is
``(1 - CCC_valence) + (1 - CCC_arousal)`` over the valid frames of the batch. After each epoch the
head predicts every validation video and is scored like ``avemo evaluate`` does (predictions
clipped to [-1, 1], CCC over all validation frames concatenated, -5 frames dropped, mean of
valence and arousal); the best epoch is saved with full provenance. Training is deterministic for a
given seed (each epoch reseeds the shuffle and dropout) and resumes after an interruption from a
state file written after every epoch.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from avemo.cache import cached_videos, read_cache_info
from avemo.dataset import (
    SequenceDataset,
    Video,
    label_files,
    load_videos,
    predict_video,
    split_folds,
    validation_names,
)
from avemo.errors import AvemoError, InputError
from avemo.files import atomic_path
from avemo.metrics import ccc_loss

log = logging.getLogger("avemo")


def heads() -> list[str]:
    """The names of every registered fusion head (what ``--head`` takes)."""
    from avemo import models

    return list(models.builders("head"))


@dataclass(frozen=True)
class Recipe:
    """An optimiser, schedule and run length from a paper or its reference code (SPEC 7).

    The learning rate in epoch ``e`` (0-based) is ``lr`` until ``decay_after``, then
    ``lr * decay_factor ** ((e - decay_after) // decay_every)``. ``patience`` stops training after
    that many epochs without a better validation CCC (``None``: run every epoch; the best epoch is
    kept either way).
    """

    name: str
    optimizer: str  # "adam" or "sgd"
    lr: float
    batch_size: int  # sequences
    epochs: int  # maximum
    seq_len: int  # clips per sequence (L)
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    decay_after: int | None = None  # epochs
    decay_every: int = 1  # epochs
    decay_factor: float = 1.0
    patience: int | None = None  # epochs
    folds: int | None = None  # cross-validation folds the paper reports

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``."""
        if self.decay_after is None or epoch < self.decay_after:
            return self.lr
        return self.lr * self.decay_factor ** ((epoch - self.decay_after) // self.decay_every)


# CVPRW 2022 JCA (seed 000): Adam 1e-3, x0.8 every 2 epochs after epoch 5, 30 epochs, batch 96, L 8
JCA_CVPR = Recipe(
    "jca-cvpr",
    "adam",
    lr=1e-3,
    batch_size=96,
    epochs=30,
    seq_len=8,
    decay_after=5,
    decay_every=2,
    decay_factor=0.8,
)
# journal JCA (T-BIOM): the same schedule in practice, at most 50 epochs, batch 64, L 16
JCA_JOURNAL = dataclasses.replace(
    JCA_CVPR, name="jca-journal", batch_size=64, epochs=50, seq_len=16
)
# JMT paper (seed 001): SGD 5e-4, batch 2, at most 5 epochs with early stopping, 5-fold CV, L 16
JMT_PAPER = Recipe("jmt-paper", "sgd", lr=5e-4, batch_size=2, epochs=5, seq_len=16, folds=5)
# JMT reference code's configuration: SGD 1e-4, momentum 0.9, Nesterov, weight decay 1e-4,
# batch 64, 20 epochs, sequences of 512 frames (L 16); its step schedule (x0.1 every 40 epochs)
# never fires within 20 epochs
JMT_CODE = Recipe(
    "jmt-code",
    "sgd",
    lr=1e-4,
    batch_size=64,
    epochs=20,
    seq_len=16,
    momentum=0.9,
    nesterov=True,
    weight_decay=1e-4,
)
RECIPES = {r.name: r for r in (JCA_CVPR, JCA_JOURNAL, JMT_PAPER, JMT_CODE)}


def recipe(name: str, **overrides) -> Recipe:
    """The recipe ``name`` with ``overrides`` (``None`` values are ignored)."""
    if name not in RECIPES:
        raise AvemoError(f"unknown recipe {name!r}; one of {', '.join(RECIPES)}")
    changes = {key: value for key, value in overrides.items() if value is not None}
    return dataclasses.replace(RECIPES[name], **changes)


# --- the loop ----------------------------------------------------------------------------------


def validation_scores(predictions: Sequence[np.ndarray], videos: Sequence[Video]) -> dict:
    """:func:`avemo.evaluate.evaluate`'s summary of the validation predictions.

    Predictions are clipped to [-1, 1] and not smoothed; pooling is the challenge's (all frames
    of all videos concatenated); frames without a valid label, and labelled frames without a
    prediction (a label file longer than the video), are not scored.
    """
    import pandas as pd

    from avemo.evaluate import evaluate

    columns = ["valence", "arousal"]
    preds = {
        v.name: pd.DataFrame(np.clip(p, -1.0, 1.0), columns=columns)
        for p, v in zip(predictions, videos, strict=True)
    }
    labels = {v.name: pd.DataFrame(v.labels, columns=columns) for v in videos}
    return evaluate(preds, labels).summary


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimiser over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=recipe.lr,
            momentum=recipe.momentum,
            nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay,
        )
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}")


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle and dropout (independent of earlier epochs)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


LOG_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "val_ccc_valence",
    "val_ccc_arousal",
    "val_ccc_mean",
    "best",
    "seconds",
)


@dataclass
class FitResult:
    """What :func:`fit` did: the best epoch (1-based) and its validation scores."""

    output: Path
    log: Path
    best_epoch: int
    validation: dict
    epochs_run: int
    history: list[dict]


def state_path(output: Path) -> Path:
    """Where :func:`fit` keeps its resumable state while it runs."""
    return output.with_name(output.name + ".state.pt")


def log_path(output: Path) -> Path:
    """The per-epoch CSV log written next to the checkpoint."""
    return output.with_suffix(".log.csv")


def fit(
    model: nn.Module,
    train_videos: Sequence[Video],
    val_videos: Sequence[Video],
    recipe: Recipe,
    output: str | os.PathLike,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    provenance: dict | None = None,
    num_workers: int = 0,
    progress: bool | None = None,
) -> FitResult:
    """Train ``model`` (from :func:`avemo.models.build`) with ``recipe``; save the best epoch.

    After every epoch the state (weights, optimiser, best so far, log) goes to
    ``<output>.state.pt``; if that file exists when ``fit`` starts with the same settings, training
    continues from it and ends exactly as an uninterrupted run would. It is deleted at the end.
    ``progress``: batch progress bars and one line per epoch on stderr (``None``: the bars only
    on a terminal; ``False``: no bars, and the epoch lines go to the log).
    """
    output = Path(output)
    device = torch.device(device)
    if not val_videos:
        raise InputError("no validation videos: give a validation set or folds")
    dataset = SequenceDataset(train_videos, recipe.seq_len)
    if len(dataset) == 0:
        raise InputError("no training sequences: the training videos have no cached clips")
    settings = {
        "recipe": dataclasses.asdict(recipe),
        "seed": seed,
        "model": model.avemo_config,
        "train": [v.name for v in train_videos],
        "validation": [v.name for v in val_videos],
    }
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    model.to(device)
    optimizer = make_optimizer(model, recipe)
    history: list[dict] = []
    best: dict | None = None
    best_state = None
    start_epoch = 0
    state_file = state_path(output)
    if state_file.exists():
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        if state.get("fingerprint") != fingerprint:
            raise AvemoError(
                "an interrupted run with other settings (data, recipe, seed or model) left this "
                "state file; delete it or use --overwrite to start over",
                state_file,
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = json.loads(state["history"])
        best = json.loads(state["best"])
        best_state = state["best_model"]
        start_epoch = len(history)
        log.info("resuming %s after epoch %d", output, start_epoch)

    stale = 0
    for row in history:
        stale = 0 if row["best"] else stale + 1
    for epoch in range(start_epoch, recipe.epochs):
        if recipe.patience is not None and stale >= recipe.patience:
            break
        started = time.perf_counter()
        seed_epoch = epoch_seed(seed, epoch)
        torch.manual_seed(seed_epoch)
        generator = torch.Generator().manual_seed(seed_epoch)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=recipe.batch_size,
            shuffle=True,
            generator=generator,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
        )
        lr = recipe.lr_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        losses = []
        bar = tqdm(
            loader,
            desc=f"{output.name} epoch {epoch + 1}/{recipe.epochs}",
            unit="batch",
            disable=None if progress is None else not progress,
            leave=False,
        )
        for audio, visual, target, mask in bar:
            audio, visual = audio.to(device), visual.to(device)
            target, mask = target.to(device), mask.to(device)
            if not mask.any():
                continue
            loss = ccc_loss(model(audio, visual), target, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        predictions = [
            predict_video(model, v.features, recipe.seq_len, device=device) for v in val_videos
        ]
        scores = validation_scores(predictions, val_videos)
        improved = best is None or _better(scores["ccc_mean"], best["ccc_mean"])
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "val_ccc_valence": scores["ccc_valence"],
            "val_ccc_arousal": scores["ccc_arousal"],
            "val_ccc_mean": scores["ccc_mean"],
            "best": improved,
            "seconds": round(time.perf_counter() - started, 3),
        }
        history.append(row)
        stale = 0 if improved else stale + 1
        message = (
            f"{output.name} epoch {epoch + 1}/{recipe.epochs}: loss {row['train_loss']:.4f}, "
            f"validation CCC valence {scores['ccc_valence']:.4f} arousal "
            f"{scores['ccc_arousal']:.4f} mean {scores['ccc_mean']:.4f}"
            + (" (best)" if improved else "")
        )
        if progress is False:
            log.info(message)
        else:
            tqdm.write(message, file=sys.stderr)
        if improved:
            best = dict(scores, epoch=epoch + 1)
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            _save_best(model, best_state, output, best, recipe, seed, history, provenance)
        _write_log(log_path(output), history)
        with atomic_path(state_file) as tmp:
            torch.save(
                {
                    "fingerprint": fingerprint,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "history": json.dumps(history),
                    "best": json.dumps(best),
                    "best_model": best_state,
                },
                tmp,
            )
    if best is None:
        raise AvemoError("no epoch ran (epochs is 0?)", output)
    # the final provenance records how many epochs ran in all
    _save_best(model, best_state, output, best, recipe, seed, history, provenance)
    state_file.unlink(missing_ok=True)
    return FitResult(output, log_path(output), best["epoch"], best, len(history), history)


def _better(score: float, best: float) -> bool:
    """Whether a validation score beats the best so far (NaN never does)."""
    return not math.isnan(score) and (math.isnan(best) or score > best)


def _save_best(model, best_state, output, best, recipe, seed, history, provenance) -> None:
    from avemo import models

    current = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    training = dict((provenance or {}).get("training") or {})
    training.update(
        recipe=dataclasses.asdict(recipe),
        seed=seed,
        best_epoch=best["epoch"],
        epochs_run=len(history),
        validation={k: v for k, v in best.items() if k != "epoch"},
        validation_note="avemo evaluate conventions, unsmoothed predictions",
    )
    record = dict(provenance or {})
    record.update(trained=True, source=record.get("source") or "avemo train", training=training)
    try:
        models.save(model, output, provenance=record)
    finally:
        model.load_state_dict(current)


def _write_log(path: Path, history: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row[k] for k in LOG_COLUMNS})


# --- the command -------------------------------------------------------------------------------


def head_arguments(head: str, audio_dim: int, visual_dim: int, seq_len: int) -> dict:
    """The builder arguments that fit a head to features of these widths and to L clips (what
    the head declares with its ``@register(..., train_arguments=...)``)."""
    from avemo import models

    try:
        entry = models.builder(head)
    except KeyError:
        raise AvemoError(f"unknown head {head!r}; one of {', '.join(heads())}") from None
    if entry.component != "head":
        raise AvemoError(f"{head!r} is a {entry.component}, not a fusion head")
    try:
        return entry.train_arguments(audio_dim, visual_dim, seq_len)
    except ValueError as error:
        raise AvemoError(str(error)) from None


def build_head(head: str, audio_dim: int, visual_dim: int, seq_len: int, **kwargs) -> nn.Module:
    """A fresh fusion head for features of these widths and sequences of ``seq_len`` clips."""
    from avemo import models

    arguments = head_arguments(head, audio_dim, visual_dim, seq_len)
    arguments.update(kwargs)
    try:
        return models.build(head, **arguments)
    except (TypeError, ValueError) as error:
        raise AvemoError(f"cannot build head {head!r} ({error})") from None


def _data_provenance(features: Path, labels: dict[str, Path], train, val) -> dict:
    cache_json = features / "cache.json"
    return {
        "features": str(features.resolve()),
        "cache_sha256": hashlib.sha256(cache_json.read_bytes()).hexdigest(),
        "labels": sorted({str(labels[v.name].parent.resolve()) for v in (*train, *val)}),
        "train_videos": len(train),
        "train_frames": int(sum((~np.isnan(v.labels)).all(1).sum() for v in train)),
        "validation_videos": [v.name for v in val],
    }


def _finished(output: Path) -> FitResult | None:
    """The result of a completed run at ``output`` (checkpoint there, no state file), if any."""
    from avemo import models

    if not output.exists() or state_path(output).exists():
        return None
    training = (models.read_header(output).get("provenance") or {}).get("training") or {}
    if "validation" not in training:
        return None
    history = []
    if log_path(output).exists():
        with open(log_path(output), newline="") as handle:
            history = list(csv.DictReader(handle))
    return FitResult(
        output,
        log_path(output),
        training["best_epoch"],
        dict(training["validation"], epoch=training["best_epoch"]),
        training["epochs_run"],
        history,
    )


def train(
    features: str | os.PathLike,
    labels: str | os.PathLike | Sequence[str | os.PathLike],
    head: str,
    output: str | os.PathLike,
    *,
    recipe_name: str = "jca-journal",
    validation: str | os.PathLike | Sequence[str] | None = None,
    folds: int | None = None,
    fold: int | None = None,
    fold_seed: int = 0,
    lr: float | None = None,
    batch_size: int | None = None,
    epochs: int | None = None,
    patience: int | None = None,
    seq_len: int | None = None,
    seed: int = 0,
    head_kwargs: dict | None = None,
    device: str = "auto",
    num_workers: int = 0,
    overwrite: bool = False,
    progress: bool | None = None,
) -> FitResult:
    """Train one fusion head on a feature cache and save its best epoch at ``output``.

    ``labels`` are folders of ``<video>.txt`` label files; the training videos are the labelled
    videos in the cache minus the validation ones. Validation is ``validation`` (a label folder,
    a file listing names, or names) or fold ``fold`` (0-based) of ``folds`` over all labelled
    cached videos. A finished run at ``output`` is returned as is unless ``overwrite``; an
    interrupted one is resumed.
    """
    from avemo.devices import torch_device

    features, output = Path(features), Path(output)
    info = read_cache_info(features)
    folders = [labels] if isinstance(labels, str | os.PathLike) else list(labels)
    label_map = label_files(folders)
    rules = recipe(
        recipe_name,
        lr=lr,
        batch_size=batch_size,
        epochs=epochs,
        patience=patience,
        seq_len=seq_len,
    )
    if overwrite:
        state_path(output).unlink(missing_ok=True)
    elif (done := _finished(output)) is not None:
        log.info("%s exists (a finished run); --overwrite trains again", output)
        return done

    if (validation is None) == (folds is None):
        raise AvemoError("give either a validation set (--val) or --folds K --fold I")
    if validation is not None:
        val_names = validation_names(validation, label_map)
    else:
        if fold is None or not 0 <= fold < folds:
            raise AvemoError(f"--fold must be in 0..{folds - 1}")
        val_names = None
    cache = cached_videos(features)
    cached_stems = {Path(n).name for n in cache}
    labelled = sorted(n for n in label_map if n in cached_stems)
    missing = sorted(set(label_map) - cached_stems)
    if missing:
        log.warning(
            "%d labelled videos have no cached features and are left out (e.g. %s)",
            len(missing),
            missing[0],
        )
    if val_names is None:
        val_names = split_folds(labelled, folds, fold_seed)[fold]
    val_set = set(val_names)
    train_names = [n for n in labelled if n not in val_set]
    if not train_names:
        raise InputError("no training videos: every labelled cached video is in validation")
    train_videos = load_videos(features, label_map, train_names)
    val_videos = load_videos(features, label_map, val_names)

    first = train_videos[0].features
    torch.manual_seed(seed)
    model = build_head(
        head, first.audio.shape[1], first.visual.shape[1], rules.seq_len, **(head_kwargs or {})
    )
    if validation is None:
        split = {"folds": folds, "fold": fold, "fold_seed": fold_seed}
    elif isinstance(validation, str | os.PathLike):
        split = {"validation": str(validation)}
    else:
        split = {"validation": sorted(validation)}
    provenance = {
        "source": "avemo train",
        "backbones": {k: info.get(k) for k in ("visual", "audio")},
        "training": {
            "head": head,
            "data": _data_provenance(features, label_map, train_videos, val_videos),
            "split": split,
        },
    }
    return fit(
        model,
        train_videos,
        val_videos,
        rules,
        output,
        seed=seed,
        device=torch_device(device),
        provenance=provenance,
        num_workers=num_workers,
        progress=progress,
    )


def cross_validate(
    features: str | os.PathLike,
    labels: str | os.PathLike | Sequence[str | os.PathLike],
    head: str,
    output: str | os.PathLike,
    *,
    folds: int,
    **options,
) -> list[FitResult]:
    """Train every fold of ``folds`` (``OUT.fold<i>.safetensors``) and write ``OUT.folds.csv``.

    The summary has one row per fold (best epoch, validation CCC of valence, arousal, their mean)
    and a last row with the mean over folds, like table 1 of the JMT paper. Finished folds are
    skipped, an interrupted one resumes.
    """
    output = Path(output)
    results = []
    for i in range(folds):
        path = output.with_name(f"{output.stem}.fold{i}{output.suffix}")
        results.append(train(features, labels, head, path, folds=folds, fold=i, **options))
    summary = fold_summary(results)
    with atomic_path(output.with_suffix(".folds.csv")) as tmp:
        summary.to_csv(tmp, index=False, float_format="%.4f")
    return results


def fold_summary(results: Sequence[FitResult]):
    """A table of the folds' best validation CCCs with their mean as the last row."""
    import pandas as pd

    rows = [
        {
            "fold": str(i),
            "best_epoch": r.best_epoch,
            "ccc_valence": r.validation["ccc_valence"],
            "ccc_arousal": r.validation["ccc_arousal"],
            "ccc_mean": r.validation["ccc_mean"],
            "checkpoint": r.output.name,
        }
        for i, r in enumerate(results)
    ]
    table = pd.DataFrame(rows)
    means = table[["ccc_valence", "ccc_arousal", "ccc_mean"]].mean()
    table.loc[len(table)] = {"fold": "mean", "best_epoch": None, **means, "checkpoint": ""}
    return table


def bundle(head: str | os.PathLike, features: str | os.PathLike, output: str | os.PathLike) -> Path:
    """One pipeline checkpoint (``avemo annotate --model``) from a trained head and the
    backbones that made its feature cache.

    The backbone checkpoints named in the cache's ``cache.json`` must still be there with the
    same sha256 (the features came from exactly those weights). The pipeline's provenance keeps
    the head's training record and names every component's file and hash.
    """
    from avemo import models
    from avemo.files import sha256_file

    head, output = Path(head), Path(output)
    info = read_cache_info(features)
    header = models.read_header(head)
    if header.get("component") != "head":
        raise AvemoError(f"not a fusion head checkpoint ({header.get('component')})", head)
    training = (header.get("provenance") or {}).get("training") or {}
    seq_len = (training.get("recipe") or {}).get("seq_len") or header["kwargs"].get("seq_len")
    if not seq_len:
        raise AvemoError(
            "the head does not say its sequence length L (not from avemo train?)", head
        )
    parts, sources = {}, {}
    for role in ("visual", "audio"):
        entry = info[role]
        path = Path(entry["checkpoint"])
        if not path.is_file():
            raise AvemoError(f"the {role} backbone checkpoint of the cache is gone", path)
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise AvemoError(f"the {role} backbone changed since extraction (sha256 differs)", path)
        module = models.load(path)
        parts[role] = getattr(module, entry["part"]) if entry.get("part") else module
        sources[role] = {"checkpoint": str(path), "sha256": digest, "builder": entry["builder"]}
    sources["head"] = {"checkpoint": str(head.resolve()), "sha256": sha256_file(head)}
    parts["head"] = models.load(head)
    pipeline, _ = models.assemble(parts, seq_len=int(seq_len))
    trained = all(info[role].get("trained") for role in ("visual", "audio"))
    models.save(
        pipeline,
        output,
        provenance={
            "trained": True,
            "source": "avemo train (fusion head) + the cache's backbones",
            "training": training,
            "components": sources,
            "backbones_trained": trained,
        },
    )
    return output


def run(
    features: str | os.PathLike,
    labels: str | os.PathLike | Sequence[str | os.PathLike],
    head: str,
    output: str | os.PathLike,
    *,
    validation: str | os.PathLike | Sequence[str] | None = None,
    folds: int | None = None,
    fold: int | None = None,
    pipeline: str | os.PathLike | None = None,
    **options,
) -> tuple[list[FitResult], Path | None]:
    """What ``avemo train`` does: one run (validation set, or fold ``fold`` of ``folds``) and,
    with ``pipeline``, the bundled pipeline checkpoint; or, with ``folds`` and no ``fold``,
    every fold (:func:`cross_validate`). Returns the runs' results and the pipeline's path."""
    if folds is not None and fold is None:
        if validation is not None or pipeline is not None:
            raise AvemoError("--folds without --fold trains every fold: no --val, --pipeline")
        return cross_validate(features, labels, head, output, folds=folds, **options), None
    result = train(
        features, labels, head, output, validation=validation, folds=folds, fold=fold, **options
    )
    bundled = None if pipeline is None else bundle(result.output, features, pipeline)
    return [result], bundled
