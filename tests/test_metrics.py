import numpy as np
import pytest
import torch
from scipy import stats

from fiqa_core import Calibration, evaluate, fit_logistic, plcc_loss, quality_loss
from fiqa_core.calibration import logistic4


def test_metrics_equal_scipy_on_random_data():
    rng = np.random.default_rng(0)
    label = rng.uniform(1, 5, 300)
    pred = label + rng.normal(0, 0.8, 300)
    m = evaluate(pred, label)
    assert m["srcc"] == pytest.approx(stats.spearmanr(pred, label).statistic, abs=1e-12)
    assert m["krcc"] == pytest.approx(stats.kendalltau(pred, label).statistic, abs=1e-12)
    cal = fit_logistic(pred, label)
    fitted = cal(pred)
    assert m["plcc"] == pytest.approx(stats.pearsonr(fitted, label).statistic, abs=1e-12)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((fitted - label) ** 2)), abs=1e-12)
    assert m["challenge"] == pytest.approx((m["srcc"] + m["plcc"]) / 2)
    assert m["n"] == 300
    # the fit can only help a linear-ish relation: PLCC after the fit >= raw Pearson
    assert m["plcc"] >= stats.pearsonr(pred, label).statistic - 1e-9


def test_logistic_fit_recovers_known_parameters():
    rng = np.random.default_rng(1)
    true = Calibration(b1=4.6, b2=1.2, b3=0.3, b4=0.7)
    raw = rng.normal(0.3, 1.5, 2000)
    labels = true(raw) + rng.normal(0, 0.01, raw.size)
    got = fit_logistic(raw, labels)
    for k, v in true.to_dict().items():
        assert getattr(got, k) == pytest.approx(v, rel=0.02, abs=0.02), k


def test_logistic_fit_converges_on_a_wide_raw_scale():
    # raw outputs spread over hundreds: the b4=0.5 start alone does not converge well
    rng = np.random.default_rng(2)
    raw = rng.normal(0, 300, 500)
    labels = Calibration(5, 1, 10, 120)(raw)
    fitted = fit_logistic(raw, labels)(raw)
    assert np.abs(fitted - labels).max() < 1e-3


def test_calibration_raises_plcc_on_training_predictions():
    rng = np.random.default_rng(3)
    raw = rng.uniform(-3, 3, 400)  # a model's raw outputs, labels saturate at both ends
    labels = Calibration(4.8, 1.1, 0.2, 0.4)(raw) + rng.normal(0, 0.1, 400)
    before = stats.pearsonr(raw, labels).statistic
    after = stats.pearsonr(fit_logistic(raw, labels)(raw), labels).statistic
    assert after > before + 0.02


def test_calibration_round_trips_through_a_dict():
    cal = Calibration(4.0, 1.0, 0.1, 0.9)
    assert Calibration.from_dict(cal.to_dict()) == cal
    assert cal(np.array([0.1]))[0] == pytest.approx(2.5)
    assert logistic4(np.array([1e9]), 4.0, 1.0, 0.1, 0.9)[0] == pytest.approx(4.0)


def test_bad_inputs_are_refused_clearly():
    with pytest.raises(ValueError, match="constant"):
        fit_logistic(np.ones(10), np.arange(10))
    with pytest.raises(ValueError, match="at least 4"):
        fit_logistic([1, 2, 3], [1, 2, 3])
    with pytest.raises(ValueError, match="differ in length"):
        evaluate([1, 2, 3, 4], [1, 2, 3])
    m = evaluate(np.ones(10), np.arange(10.0))
    assert m["srcc"] == 0.0 and m["plcc"] == 0.0


def test_plcc_loss_matches_its_definition():
    torch.manual_seed(0)
    pred, label = torch.randn(32), torch.randn(32)
    p = (pred - pred.mean()) / (pred.std(unbiased=False) + 1e-8)
    y = (label - label.mean()) / (label.std(unbiased=False) + 1e-8)
    rho = (p * y).mean()
    want = (((p - y) ** 2).mean() / 4 + ((rho * p - y) ** 2).mean() / 4) / 2
    torch.testing.assert_close(plcc_loss(pred, label), want)
    # zero for any positive affine map of the labels, larger for anti-correlation
    assert plcc_loss(3 * label + 1, label) < 1e-6
    assert plcc_loss(-label, label) == pytest.approx(0.5, abs=1e-5)  # (4/4 + 0/4) / 2
    total = quality_loss(pred, label)
    torch.testing.assert_close(total, ((pred - label) ** 2).mean() + want)


def test_quality_loss_trains_a_model():
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 3
    layer = torch.nn.Linear(4, 1)
    opt = torch.optim.AdamW(layer.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        quality_loss(layer(x).squeeze(1), y).backward()
        opt.step()
    assert quality_loss(layer(x).squeeze(1), y).item() < 0.05
