"""RiskControlledPolicy: p-values against exact binomial tails, fixed-sequence testing,
the guarantee measured over repeated draws, budgets, the sklearn API and bad input."""

import copy
import pickle
import warnings

import numpy as np
import pytest
from scipy.stats import binom
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from eenet_sklearn import (
    MaxProbPolicy,
    PatiencePolicy,
    RiskControlledPolicy,
    RiskNotCertifiedWarning,
)
from eenet_sklearn._risk_control import (
    _fixed_sequence,
    _samples_needed,
    binomial_p_values,
    hoeffding_bentkus_p_values,
)
from eenet_sklearn.datasets import make_exit_logits

COSTS = [1.0, 2.0, 3.0, 4.0]


@pytest.fixture(scope="module")
def data():
    return make_exit_logits(4000, n_exits=4, n_classes=5, random_state=0)


@pytest.fixture(scope="module")
def prefit_policy(data):
    X, y = make_exit_logits(2000, n_exits=4, n_classes=5, random_state=1)
    return MaxProbPolicy(costs=COSTS, budget=2.5).fit(X, y)


# --- p-values ---------------------------------------------------------------------------


def test_binomial_p_values_hand_worked():
    # No loss in 10 at epsilon 0.2: 0.8 ** 10; one loss: 0.8 ** 10 + 10 * 0.2 * 0.8 ** 9.
    assert binomial_p_values(0, 10, 0.2) == pytest.approx(0.8**10, rel=1e-12)
    assert binomial_p_values(1, 10, 0.2) == pytest.approx(0.8**10 + 10 * 0.2 * 0.8**9, rel=1e-12)
    # Every outcome: the binomial cdf.
    np.testing.assert_allclose(
        binomial_p_values(np.arange(11), 10, 0.2), np.cumsum(binom.pmf(np.arange(11), 10, 0.2))
    )


def test_hoeffding_bentkus_hand_worked():
    # r = 0: Hoeffding's exp(-n log(1 / (1 - eps))) = (1 - eps) ** n, below Bentkus's e-fold.
    assert hoeffding_bentkus_p_values(0, 10, 0.2) == pytest.approx(0.8**10, rel=1e-12)
    # r = 0.5 above eps = 0.2: Hoeffding says 1; Bentkus e * P(Bin(10, 0.2) <= 5) > 1 -> 1.
    assert hoeffding_bentkus_p_values(5, 10, 0.2) == 1.0
    # r = 0.1, n = 100, eps = 0.2: min(exp(-n h), e * P(Bin <= 10)), h by hand.
    r, eps = 0.1, 0.2
    h = r * np.log(r / eps) + (1 - r) * np.log((1 - r) / (1 - eps))
    expected = min(np.exp(-100 * h), np.e * binom.cdf(10, 100, eps))
    assert hoeffding_bentkus_p_values(10, 100, eps) == pytest.approx(expected, rel=1e-12)


def test_hoeffding_bentkus_counts_are_exact():
    # 25 * (7 / 25) rounds above 7 in floating point; a count of 7 must stay 7.
    assert np.ceil(25 * (7 / 25)) == 8
    hoeffding = np.exp(-25 * (0.28 * np.log(0.28 / 0.5) + 0.72 * np.log(0.72 / 0.5)))
    expected = min(hoeffding, np.e * binom.cdf(7, 25, 0.5))
    assert hoeffding_bentkus_p_values(7, 25, 0.5) == pytest.approx(expected, rel=1e-12)


def test_hoeffding_bentkus_never_below_exact_binomial():
    counts = np.arange(0, 201)
    for eps in (0.01, 0.05, 0.3):
        hb = hoeffding_bentkus_p_values(counts, 200, eps)
        exact = binomial_p_values(counts, 200, eps)
        assert np.all(hb >= exact * (1 - 1e-12))
        assert np.all((hb >= 0) & (hb <= 1))


def test_fixed_sequence_stops_at_first_acceptance():
    assert _fixed_sequence(np.array([0.0, 0.05, 0.2, 0.01]), 0.1) == 2
    assert _fixed_sequence(np.array([0.5, 0.0]), 0.1) == 0
    assert _fixed_sequence(np.array([0.0, 0.1]), 0.1) == 2  # p <= delta rejects


def test_samples_needed_hand_worked():
    # (1 - 0.01) ** n <= 0.1  <=>  n >= log(0.1) / log(0.99) = 229.1
    assert _samples_needed(0.01, 0.1, "binomial") == 230
    assert 0.99**230 <= 0.1 < 0.99**229
    # CRC: 1 / (n + 1) <= 0.05  <=>  n >= 19
    assert _samples_needed(0.05, 0.1, "crc") == 19


# --- fitting ----------------------------------------------------------------------------


def test_fit_follows_fixed_sequence(data):
    X, y = data
    model = RiskControlledPolicy(MaxProbPolicy(costs=COSTS), max_risk=0.03, random_state=0).fit(X, y)
    p, point, delta = model.p_values_, model.operating_point_, 0.1
    assert model.certified_
    assert np.all(p[: point + 1] <= delta)
    if point + 1 < len(p):
        assert p[point + 1] > delta
    # p-values are the binomial tails of the calibration loss counts.
    counts = np.rint(model.risks_ * model.n_calibration_)
    np.testing.assert_allclose(p[1:], binom.cdf(counts[1:], model.n_calibration_, 0.03))
    # The chosen thresholds are the policy's; point 0 is everything at the last exit.
    np.testing.assert_array_equal(model.policy_.thresholds_, model.path_thresholds_[point])
    assert model.calibration_costs_[0] == COSTS[-1] and model.risks_[0] == 0
    assert model.expected_cost_ < COSTS[-1]
    # The wrapper predicts as the policy at that point.
    np.testing.assert_array_equal(model.predict_exit(X), model.policy_.predict_exit(X))
    np.testing.assert_array_equal(model.predict(X), model.policy_.predict(X))


def test_risks_are_the_defined_losses(data, prefit_policy):
    X, y = data
    kw = dict(prefit=True, random_state=3, max_risk=0.05)
    gap = RiskControlledPolicy(prefit_policy, risk="accuracy_gap", **kw).fit(X, y)
    # Recompute the chosen point's loss by hand on the calibration part.
    rng_rows = gap.calibration_indices_
    assert len(rng_rows) == gap.n_calibration_ == len(X) // 2
    exits = gap.predict_exit(X[rng_rows])
    preds = X[rng_rows].argmax(axis=2)
    early = preds[np.arange(len(rng_rows)), exits]
    last = preds[:, -1]
    truth = y[rng_rows]
    assert gap.risk_ == pytest.approx(np.mean((last == truth) & (early != truth)))
    # Disagreement is the larger loss, sample by sample, at every point of the same path.
    dis = RiskControlledPolicy(prefit_policy, risk="disagreement", **kw).fit(X)
    np.testing.assert_array_equal(dis.path_thresholds_, gap.path_thresholds_)
    assert np.all(dis.risks_ >= gap.risks_)
    assert dis.operating_point_ <= gap.operating_point_


def test_guarantee_holds_over_repeated_draws(prefit_policy):
    # The population risk of each path point is measured on a large fresh draw; over 60
    # calibration draws, the certified point's risk may exceed epsilon at most delta of the
    # time (0.2 here; 3 binomial standard errors of slack).
    big_X, big_y = make_exit_logits(20000, n_exits=4, n_classes=5, random_state=7)
    eps, delta, n_draws, violations = 0.04, 0.2, 60, 0
    savings = []
    for seed in range(n_draws):
        X, y = make_exit_logits(800, n_exits=4, n_classes=5, random_state=100 + seed)
        model = RiskControlledPolicy(
            prefit_policy, max_risk=eps, confidence_level=1 - delta, prefit=True, random_state=seed
        ).fit(X, y)
        exits = model.predict_exit(big_X)
        preds = big_X.argmax(axis=2)
        early = preds[np.arange(len(big_X)), exits]
        risk = np.mean((preds[:, -1] == big_y) & (early != big_y))
        violations += risk > eps
        savings.append(1 - model.expected_cost(big_X) / COSTS[-1])
    bound = delta + 3 * np.sqrt(delta * (1 - delta) / n_draws)
    assert violations / n_draws <= bound
    assert np.mean(savings) > 0.05  # not vacuous: it does exit early


def test_crc_rule(data, prefit_policy):
    X, y = data
    model = RiskControlledPolicy(prefit_policy, max_risk=0.03, method="crc", prefit=True, random_state=0)
    model = model.fit(X, y)
    assert np.all(np.isnan(model.p_values_))
    # CRC picks the last point with (n R_monotone + 1) / (n + 1) <= eps; the monotone risk is
    # at least the plain one, so the plain risk there satisfies the bound too.
    n = model.n_calibration_
    assert (n * model.risk_ + 1) / (n + 1) <= 0.03
    assert model.operating_point_ > 0


def test_budget_ceiling_and_fallback(data, prefit_policy):
    X, y = data
    model = RiskControlledPolicy(prefit_policy, max_risk=0.05, budget=3.0, prefit=True, random_state=0)
    model = model.fit(X, y)
    assert model.certified_ and model.path_costs_[model.operating_point_] <= 3.0 * (1 + 1e-9)
    assert np.isnan(model.p_values_[0])  # above the budget: not tested
    # A budget nothing can meet at this risk: warn and fall back to the last exit.
    tight = RiskControlledPolicy(prefit_policy, max_risk=0.002, budget=1.2, prefit=True, random_state=0)
    with pytest.warns(RiskNotCertifiedWarning, match=r"budget=1\.2"):
        tight.fit(X, y)
    assert not tight.certified_ and tight.operating_point_ == 0
    np.testing.assert_array_equal(tight.predict_exit(X), np.full(len(X), 3))
    with pytest.raises(ValueError, match=r"No operating point within budget=1\.2"):
        tight.set_params(on_failure="raise").fit(X, y)


def test_no_budget_always_certifies_the_last_exit(data, prefit_policy):
    X, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("error", RiskNotCertifiedWarning)
        model = RiskControlledPolicy(prefit_policy, max_risk=0.001, prefit=True, calibration_size=2400)
        model.fit(X, y)
    assert model.certified_


def test_unlabelled_fit_of_an_unfitted_policy(data):
    X, _ = data
    model = RiskControlledPolicy(
        MaxProbPolicy(costs=COSTS), risk="disagreement", max_risk=0.05, random_state=0
    )
    model.fit(X)
    assert model.certified_ and model.expected_cost_ < COSTS[-1]
    np.testing.assert_array_equal(model.classes_, np.arange(5))


def test_too_few_calibration_samples_says_how_many(data, prefit_policy):
    X, y = data
    model = RiskControlledPolicy(prefit_policy, max_risk=0.01, prefit=True, calibration_size=229)
    with pytest.raises(ValueError, match=r"has 229 samples.*at least 230 calibration samples"):
        model.fit(X, y)
    model.set_params(calibration_size=230).fit(X, y)  # enough: fits


@pytest.mark.parametrize("name", ["max_risk", "confidence_level"])
@pytest.mark.parametrize("value", [0.0, 1.0, -0.1, 1.5])
def test_levels_outside_the_open_unit_interval(data, name, value):
    X, y = data
    model = RiskControlledPolicy(MaxProbPolicy(costs=COSTS), **{name: value})
    with pytest.raises(ValueError, match=rf"{name} must be in \(0, 1\)"):
        model.fit(X, y)


def test_other_bad_input(data):
    X, y = data
    with pytest.raises(ValueError, match="risk='accuracy_gap' needs labels"):
        RiskControlledPolicy(MaxProbPolicy(costs=COSTS)).fit(X)
    with pytest.raises(TypeError, match="max_risk must be a real number"):
        RiskControlledPolicy(MaxProbPolicy(costs=COSTS), max_risk="0.1").fit(X, y)
    with pytest.raises(ValueError, match="risk must be one of"):
        RiskControlledPolicy(MaxProbPolicy(costs=COSTS), risk="gap").fit(X, y)
    with pytest.raises(TypeError, match="quotas of an exit score"):
        RiskControlledPolicy(PatiencePolicy(costs=COSTS)).fit(X, y)
    with pytest.raises(TypeError, match="policy must be an eenet_sklearn exit policy"):
        RiskControlledPolicy("maxprob").fit(X, y)
    with pytest.raises(ValueError, match="calibration_size must be"):
        RiskControlledPolicy(MaxProbPolicy(costs=COSTS), calibration_size=1.0).fit(X, y)


def test_sklearn_api_and_no_mutation(data, prefit_policy):
    X, y = data
    X_before, thresholds_before = X.copy(), prefit_policy.thresholds_.copy()
    model = RiskControlledPolicy(prefit_policy, max_risk=0.05, prefit=True, random_state=0)
    model.fit(X, y)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(prefit_policy.thresholds_, thresholds_before)
    assert clone(model).get_params()["max_risk"] == 0.05
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))
    search = GridSearchCV(
        RiskControlledPolicy(MaxProbPolicy(costs=COSTS), random_state=0),
        {"max_risk": [0.02, 0.1]},
        cv=2,
    ).fit(X[:2000], y[:2000])
    assert search.best_params_["max_risk"] in (0.02, 0.1)
    assert copy.deepcopy(search.best_estimator_).certified_


def test_benchmark_quick_run(tmp_path, monkeypatch):
    import csv
    import importlib.util
    from pathlib import Path

    benchmarks = Path(__file__).resolve().parent.parent / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))
    spec = importlib.util.spec_from_file_location("risk_control_bench", benchmarks / "risk_control.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    written = script.main(["--quick", "--out-dir", str(tmp_path)])
    assert {path.name for path in written} == {f"risk_control_quick.{ext}" for ext in ("md", "csv", "png")}
    with (tmp_path / "risk_control_quick.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 * 4  # four methods, four epsilons, one set
    for row in rows:
        assert 0 <= float(row["violation_rate"]) <= 1
        # Certified at risk <= epsilon: the mean risk over draws sits below epsilon.
        assert float(row["mean_risk_points"]) <= float(row["epsilon_points"])
    text = (tmp_path / "risk_control_quick.md").read_text()
    assert "Command: `python benchmarks/risk_control.py --quick" in text and "## Findings" in text
