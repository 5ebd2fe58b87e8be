"""Agreement metrics for valence/arousal: CCC (the challenge metric), PCC, RMSE, SAGR (SPEC 8).

CCC uses population (1/N) moments, as the ABAW challenge and ``audmetric`` do::

    CCC = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)

Degenerate inputs never crash and never give an unexplained NaN:

- fewer than 2 frames: CCC and PCC are undefined (NaN, shown as ``n/a``); RMSE and SAGR are
  computed from the frames there are (NaN only for 0 frames);
- a constant series (max == min): CCC follows the formula (its covariance is 0, so CCC is 0
  unless both series are the same constant); PCC is 0 (no linear association is measurable);
- both series the same constant: CCC is 1 (perfect agreement, the value CCC takes for any two
  identical series), PCC 0.

SAGR is the share of frames where ``sign(pred) == sign(label)`` (``numpy.sign``, so 0 only
agrees with 0). The torch versions (``ccc_torch``, ``ccc_loss``) are what training optimises.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

DIMENSIONS = ("valence", "arousal")
METRICS = ("ccc", "pcc", "rmse", "sagr")
# the summary keys of one scoring, in order (also the --json keys, with n_* and pooling)
SCORE_KEYS = (
    "ccc_valence",
    "ccc_arousal",
    "ccc_mean",
    "pcc_valence",
    "pcc_arousal",
    "rmse_valence",
    "rmse_arousal",
    "sagr_valence",
    "sagr_arousal",
)


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"series differ in length: {x.size} and {y.size}")
    return x, y


def _centred(x: np.ndarray) -> np.ndarray:
    """``x - mean(x)``, exactly 0 for a constant series (no rounding residue)."""
    if x.size and x.max() == x.min():
        return np.zeros_like(x)
    return x - x.mean()


def ccc(x, y, *, ddof: int = 0) -> float:
    """Concordance correlation coefficient of two equally long series.

    ``ddof=0`` (default) uses population moments as SPEC 8 and the challenge do; ``ddof=1``
    divides variances and covariance by N-1 but not the squared mean difference, which is
    torchmetrics' ``concordance_corrcoef`` convention (the two agree when the means are equal).
    """
    x, y = _pair(x, y)
    n = x.size
    if n < 2:
        return float("nan")
    dx, dy = _centred(x), _centred(y)
    scale = 1.0 / (n - ddof)
    covariance = scale * np.dot(dx, dy)
    denominator = scale * (np.dot(dx, dx) + np.dot(dy, dy)) + (x.mean() - y.mean()) ** 2
    if denominator == 0:  # both series the same constant: perfect agreement
        return 1.0
    return float(2.0 * covariance / denominator)


def pcc(x, y) -> float:
    """Pearson correlation coefficient; 0 for a constant series, NaN for fewer than 2 frames."""
    x, y = _pair(x, y)
    if x.size < 2:
        return float("nan")
    dx, dy = _centred(x), _centred(y)
    norms = np.sqrt(np.dot(dx, dx) * np.dot(dy, dy))
    if norms == 0:
        return 0.0
    return float(np.clip(np.dot(dx, dy) / norms, -1.0, 1.0))


def rmse(x, y) -> float:
    """Root mean squared error; NaN for no frames."""
    x, y = _pair(x, y)
    return float(np.sqrt(np.mean((x - y) ** 2))) if x.size else float("nan")


def sagr(x, y) -> float:
    """Sign agreement: the share of frames where ``sign(x) == sign(y)``; NaN for no frames."""
    x, y = _pair(x, y)
    return float(np.mean(np.sign(x) == np.sign(y))) if x.size else float("nan")


def _columns(values, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(DIMENSIONS):
        raise ValueError(f"{name} must be N x 2 (valence, arousal), got shape {values.shape}")
    return values


def score(pred, label) -> dict[str, float]:
    """Every metric for N x 2 (valence, arousal) predictions and labels, as one flat dict.

    Rows with a NaN in either array (no prediction, invalid label) are left out; ``n_frames``
    counts the rest. Keys: ``ccc_valence, ccc_arousal, ccc_mean, pcc_*, rmse_*, sagr_*,
    n_frames``; ``ccc_mean`` is the challenge score P = (CCC_v + CCC_a) / 2.
    """
    pred, label = _columns(pred, "pred"), _columns(label, "label")
    if pred.shape != label.shape:
        raise ValueError(f"pred and label differ in length: {len(pred)} and {len(label)}")
    keep = ~(np.isnan(pred).any(axis=1) | np.isnan(label).any(axis=1))
    pred, label = pred[keep], label[keep]
    result: dict[str, float] = {}
    for name, function in zip(METRICS, (ccc, pcc, rmse, sagr), strict=True):
        for i, dimension in enumerate(DIMENSIONS):
            result[f"{name}_{dimension}"] = function(pred[:, i], label[:, i])
    result["ccc_mean"] = (result["ccc_valence"] + result["ccc_arousal"]) / 2
    return {key: result[key] for key in SCORE_KEYS} | {"n_frames": int(keep.sum())}


# --- sufficient statistics: scores of any union of videos without touching the frames again ----

# per dimension: n, sum x, sum y, sum x^2, sum y^2, sum xy, sum of sign agreements
_N, _SX, _SY, _SXX, _SYY, _SXY, _AGREE = range(7)


def moments(pred, label) -> np.ndarray:
    """Sums from which ``score_moments`` recomputes every metric: 2 x 7 per set of frames.

    Statistics of several videos add up, so bootstrap resamples cost one matrix product each.
    Rows with a NaN in either array are left out, as in ``score``.
    """
    pred, label = _columns(pred, "pred"), _columns(label, "label")
    keep = ~(np.isnan(pred).any(axis=1) | np.isnan(label).any(axis=1))
    x, y = pred[keep], label[keep]
    stats = np.empty((len(DIMENSIONS), 7))
    stats[:, _N] = len(x)
    stats[:, _SX], stats[:, _SY] = x.sum(0), y.sum(0)
    stats[:, _SXX], stats[:, _SYY], stats[:, _SXY] = (x * x).sum(0), (y * y).sum(0), (x * y).sum(0)
    stats[:, _AGREE] = (np.sign(x) == np.sign(y)).sum(0)
    return stats


def score_moments(stats: np.ndarray) -> dict[str, np.ndarray]:
    """``score``'s metrics from summed ``moments`` (shape ``... x 2 x 7``), vectorised.

    Same conventions as ``score`` (degenerate cases included), up to floating-point rounding of
    the one-pass sums (about 1e-12 for values in [-1, 1]).
    """
    stats = np.asarray(stats, dtype=np.float64)
    n = stats[..., _N]
    with np.errstate(divide="ignore", invalid="ignore"):
        mx, my = stats[..., _SX] / n, stats[..., _SY] / n
        vx = np.maximum(stats[..., _SXX] / n - mx * mx, 0.0)
        vy = np.maximum(stats[..., _SYY] / n - my * my, 0.0)
        cov = stats[..., _SXY] / n - mx * my
        denominator = vx + vy + (mx - my) ** 2
        ccc_ = np.where(denominator > 0, 2 * cov / denominator, 1.0)
        norms = np.sqrt(vx * vy)
        pcc_ = np.where(norms > 0, np.clip(cov / norms, -1, 1), 0.0)
        mse = np.maximum(stats[..., _SXX] + stats[..., _SYY] - 2 * stats[..., _SXY], 0.0) / n
        rmse_ = np.sqrt(mse)
        sagr_ = stats[..., _AGREE] / n
    few = n < 2
    ccc_, pcc_ = np.where(few, np.nan, ccc_), np.where(few, np.nan, pcc_)
    result: dict[str, np.ndarray] = {}
    for name, values in zip(METRICS, (ccc_, pcc_, rmse_, sagr_), strict=True):
        for i, dimension in enumerate(DIMENSIONS):
            result[f"{name}_{dimension}"] = values[..., i]
    result["ccc_mean"] = (result["ccc_valence"] + result["ccc_arousal"]) / 2
    return {key: result[key] for key in SCORE_KEYS}


# --- torch: the differentiable versions that training uses ------------------------------------


def ccc_torch(x: torch.Tensor, y: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """CCC along ``dim`` with population moments (NaN where the denominator is 0)."""
    mx, my = x.mean(dim, keepdim=True), y.mean(dim, keepdim=True)
    dx, dy = x - mx, y - my
    covariance = (dx * dy).mean(dim)
    denominator = dx.square().mean(dim) + dy.square().mean(dim) + (mx - my).squeeze(dim).square()
    return 2 * covariance / denominator


def ccc_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Training loss ``sum over outputs of (1 - CCC)`` (SPEC 7: valence + arousal).

    ``pred`` and ``target`` are ``... x D`` (D outputs, e.g. 2); CCC is computed per output over
    all leading positions (every frame of every sequence in the batch) where ``mask`` is true.
    ``mask`` is ``...`` (per frame) or ``... x D`` (per output); masked frames may hold anything,
    NaN included, and get no gradient. ``eps`` keeps the loss finite when the denominator is 0
    (e.g. constant predictions and targets); an output with no unmasked frame contributes 1.
    """
    import torch

    if pred.shape != target.shape:
        raise ValueError(f"pred and target differ in shape: {tuple(pred.shape)}, {target.shape}")
    shape, outputs = pred.shape, pred.shape[-1]
    pred, target = pred.reshape(-1, outputs), target.reshape(-1, outputs)
    if mask is None:
        keep = torch.ones_like(pred, dtype=torch.bool)
    else:
        mask = mask.to(device=pred.device, dtype=torch.bool)
        if mask.shape == shape[:-1]:
            mask = mask.unsqueeze(-1)
        if mask.shape not in (shape, shape[:-1] + (1,)):
            raise ValueError(f"mask shape {tuple(mask.shape)} does not fit {tuple(shape)}")
        keep = mask.reshape(-1, mask.shape[-1]).expand_as(pred)
    weight = keep.to(pred.dtype)
    pred = torch.where(keep, pred, torch.zeros_like(pred))
    target = torch.where(keep, target, torch.zeros_like(target))
    n = weight.sum(0).clamp_min(1.0)
    mp, mt = pred.sum(0) / n, target.sum(0) / n
    dp, dt = (pred - mp) * weight, (target - mt) * weight
    covariance = (dp * dt).sum(0) / n
    variances = (dp.square().sum(0) + dt.square().sum(0)) / n
    concordance = 2 * covariance / (variances + (mp - mt).square() + eps)
    return (1.0 - concordance).sum()
