import math

import audmetric
import numpy as np
import pytest
import torch
from torchmetrics.functional.regression import concordance_corrcoef, pearson_corrcoef

from avemo.metrics import (
    SCORE_KEYS,
    ccc,
    ccc_loss,
    ccc_torch,
    moments,
    pcc,
    rmse,
    sagr,
    score,
    score_moments,
)


def series(n, seed, smooth=False):
    """Two related series: white noise, or random walks like real per-frame traces."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.1, 0.4, n)
    if smooth:
        x = np.tanh(np.cumsum(rng.normal(0, 0.02, n)))
    y = 0.7 * x + rng.normal(-0.05, 0.2, n)
    return x, y


CASES = [(2, 0, False), (10, 1, False), (1000, 2, False), (50_000, 3, True)]  # 50k: a long video


def test_hand_computed_ccc():
    # x mean 1, var 2/3; y mean 2/3, var 2/9; cov 1/3; (mean difference)^2 1/9
    assert ccc([0, 1, 2], [0, 1, 1]) == pytest.approx(2 / 3, abs=1e-15)
    # a shift by 1: cov = var = 2/3, so 2 * 2/3 / (4/3 + 1) = 4/7
    assert ccc([1, 2, 3], [2, 3, 4]) == pytest.approx(4 / 7, abs=1e-15)
    assert ccc([-1, 0, 1], [1, 0, -1]) == pytest.approx(-1.0, abs=1e-15)
    assert ccc([0.2, -0.4, 0.9], [0.2, -0.4, 0.9]) == pytest.approx(1.0, abs=1e-15)
    # a scaled copy correlates perfectly but does not agree: 2 * 4/3 / (2/3 + 8/3) = 0.8
    assert ccc([-1, 0, 1], [-2, 0, 2]) == pytest.approx(0.8, abs=1e-15)


def test_hand_computed_pcc_rmse_sagr():
    assert pcc([-1, 0, 1], [-2, 0, 2]) == pytest.approx(1.0)
    assert pcc([1, 2, 3], [3, 1, 2]) == pytest.approx(-0.5)
    assert rmse([0, 0], [3, 4]) == pytest.approx(math.sqrt(12.5))
    # signs: (+,+) agree, (-,+) no, (0,0) agree, (+,-) no
    assert sagr([0.5, -0.2, 0.0, 0.1], [0.3, 0.4, 0.0, -0.1]) == 0.5


@pytest.mark.parametrize("n, seed, smooth", CASES)
def test_agrees_with_audmetric(n, seed, smooth):
    x, y = series(n, seed, smooth)
    assert abs(ccc(x, y) - audmetric.concordance_cc(y, x)) < 1e-9
    assert abs(ccc(y, x) - audmetric.concordance_cc(x, y)) < 1e-9
    assert abs(pcc(x, y) - audmetric.pearson_cc(y, x)) < 1e-9
    assert abs(rmse(x, y) - math.sqrt(audmetric.mean_squared_error(y, x))) < 1e-9


@pytest.mark.parametrize("n, seed, smooth", CASES)
def test_agrees_with_torchmetrics_given_its_variance_convention(n, seed, smooth):
    """torchmetrics divides variances and covariance by N-1 but leaves the squared mean
    difference alone, so it matches ``ccc(..., ddof=1)``; the SPEC's population CCC (ddof=0)
    is the same number only when the means are equal."""
    x, y = series(n, seed, smooth)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)  # float64
    reference = concordance_corrcoef(tx, ty).item()
    assert abs(ccc(x, y, ddof=1) - reference) < 1e-9
    centred = concordance_corrcoef(tx - tx.mean(), ty - ty.mean()).item()
    assert abs(ccc(x - x.mean(), y - y.mean()) - centred) < 1e-9
    if n < 100:  # with different means the conventions differ by O(1/N)
        assert abs(ccc(x, y) - reference) > 1e-6
    assert abs(pcc(x, y) - pearson_corrcoef(tx, ty).item()) < 1e-9


def test_degenerate_inputs_give_documented_values():
    for function in (ccc, pcc):
        assert math.isnan(function([], []))
        assert math.isnan(function([0.3], [0.1]))
    assert math.isnan(rmse([], [])) and math.isnan(sagr([], []))
    assert rmse([0.3], [0.1]) == pytest.approx(0.2) and sagr([0.3], [0.1]) == 1.0
    varying = [0.1, 0.2, 0.3]
    constant = [0.1, 0.1, 0.1]  # 0.1 is not exact in binary: no rounding residue may leak in
    assert ccc(constant, varying) == 0.0 and pcc(constant, varying) == 0.0
    assert ccc(varying, constant) == 0.0 and pcc(varying, constant) == 0.0
    assert ccc(constant, constant) == 1.0 and pcc(constant, constant) == 0.0
    assert ccc(constant, [0.5] * 3) == 0.0
    with pytest.raises(ValueError, match="differ in length"):
        ccc([1, 2], [1, 2, 3])


def test_score_drops_rows_with_nan_and_has_every_key():
    rng = np.random.default_rng(4)
    label = rng.uniform(-1, 1, (100, 2))
    pred = label + rng.normal(0, 0.3, (100, 2))
    label[:5, 0] = np.nan  # invalid labels
    pred[95:, 1] = np.nan  # no prediction
    result = score(pred, label)
    assert list(result) == [*SCORE_KEYS, "n_frames"]
    assert result["n_frames"] == 90
    keep = slice(5, 95)
    assert result["ccc_valence"] == ccc(pred[keep, 0], label[keep, 0])
    assert result["rmse_arousal"] == rmse(pred[keep, 1], label[keep, 1])
    assert result["ccc_mean"] == (result["ccc_valence"] + result["ccc_arousal"]) / 2
    with pytest.raises(ValueError, match="N x 2"):
        score(pred[:, 0], label[:, 0])


def test_moments_add_up_to_the_scores_of_concatenated_videos():
    rng = np.random.default_rng(5)
    videos = []
    for n in (40, 300, 77):
        label = np.tanh(np.cumsum(rng.normal(0, 0.1, (n, 2)), axis=0))
        videos.append((label + rng.normal(0.05, 0.2, (n, 2)), label))
    total = sum(moments(p, y) for p, y in videos)
    expected = score(np.concatenate([p for p, _ in videos]), np.concatenate([y for _, y in videos]))
    got = score_moments(total)
    for key in SCORE_KEYS:
        assert abs(got[key] - expected[key]) < 1e-9, key
    # batched: a stack of statistics gives a vector per key
    stacked = score_moments(np.stack([moments(p, y) for p, y in videos]))
    assert stacked["ccc_valence"].shape == (3,)
    assert abs(stacked["ccc_valence"][1] - ccc(videos[1][0][:, 0], videos[1][1][:, 0])) < 1e-9


def test_moments_follow_the_degenerate_conventions():
    single = score_moments(moments([[0.2, 0.1]], [[0.3, 0.1]]))
    assert math.isnan(single["ccc_valence"]) and math.isnan(single["pcc_arousal"])
    assert single["rmse_valence"] == pytest.approx(0.1) and single["sagr_valence"] == 1.0
    constant = np.full((4, 2), 0.5)
    varying = np.array([[0.1, 0.2], [0.3, -0.2], [-0.5, 0.0], [0.4, 0.9]])
    same = score_moments(moments(constant, constant))
    assert same["ccc_valence"] == 1.0 and same["pcc_valence"] == 0.0
    one_constant = score_moments(moments(constant, varying))
    assert abs(one_constant["ccc_valence"]) < 1e-12 and one_constant["pcc_valence"] == 0.0


def test_ccc_torch_matches_ccc_along_a_dimension():
    x, y = series(500, 6)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    assert abs(ccc_torch(tx, ty).item() - ccc(x, y)) < 1e-12
    batch_x = torch.stack([tx, ty, tx * 0.5]).T  # 500 x 3
    batch_y = torch.stack([ty, tx, ty]).T
    values = ccc_torch(batch_x, batch_y, dim=0)
    assert values.shape == (3,)
    assert abs(values[2].item() - ccc(x * 0.5, y)) < 1e-12


def test_ccc_loss_is_one_minus_ccc_summed_over_valence_and_arousal():
    rng = np.random.default_rng(7)
    target = torch.from_numpy(rng.uniform(-1, 1, (4, 16, 2)))  # B x L x 2
    pred = (target + torch.from_numpy(rng.normal(0, 0.3, (4, 16, 2)))).requires_grad_()
    loss = ccc_loss(pred, target)
    p, t = pred.detach().reshape(-1, 2).numpy(), target.reshape(-1, 2).numpy()
    expected = (1 - ccc(p[:, 0], t[:, 0])) + (1 - ccc(p[:, 1], t[:, 1]))
    assert abs(loss.item() - expected) < 1e-6  # eps in the denominator
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert ccc_loss(target, target).item() == pytest.approx(0.0, abs=1e-6)


def test_ccc_loss_masks_frames_and_their_nan_targets():
    rng = np.random.default_rng(8)
    target = torch.from_numpy(rng.uniform(-1, 1, (2, 10, 2)))
    pred = torch.from_numpy(rng.uniform(-1, 1, (2, 10, 2))).requires_grad_()
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False  # padding or frames labelled -5
    target[1, 6:] = float("nan")
    loss = ccc_loss(pred, target, mask)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.all(pred.grad[1, 6:] == 0) and pred.grad[0].abs().sum() > 0
    keep = mask.reshape(-1).numpy()
    p, t = pred.detach().reshape(-1, 2).numpy()[keep], target.reshape(-1, 2).numpy()[keep]
    expected = sum(1 - ccc(p[:, i], t[:, i]) for i in range(2))
    assert abs(loss.item() - expected) < 1e-6
    # a per-output mask: arousal of the first sequence masked too
    per_output = mask[..., None].repeat(1, 1, 2)
    per_output[0, :, 1] = False
    loss = ccc_loss(pred, target, per_output)
    arousal = per_output[..., 1].reshape(-1).numpy()
    p, t = pred.detach().reshape(-1, 2).numpy(), target.reshape(-1, 2).numpy()
    expected = (1 - ccc(p[keep, 0], t[keep, 0])) + (1 - ccc(p[arousal, 1], t[arousal, 1]))
    assert abs(loss.item() - expected) < 1e-6


def test_ccc_loss_degenerate_batches_stay_finite():
    constant = torch.full((8, 2), 0.3, requires_grad=True)
    loss = ccc_loss(constant, torch.full((8, 2), 0.3))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(constant.grad).all()
    nothing = ccc_loss(torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(4, dtype=torch.bool))
    assert nothing.item() == pytest.approx(2.0)  # each output without frames contributes 1
    with pytest.raises(ValueError, match="mask shape"):
        ccc_loss(torch.zeros(4, 2), torch.zeros(4, 2), torch.ones(3, dtype=torch.bool))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_ccc_loss_on_cuda():
    pred = torch.rand(2, 16, 2, device="cuda", requires_grad=True)
    loss = ccc_loss(pred, torch.rand(2, 16, 2, device="cuda"), torch.ones(2, 16, dtype=torch.bool))
    loss.backward()
    assert loss.device.type == "cuda" and torch.isfinite(pred.grad).all()
