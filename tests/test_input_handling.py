"""Bad inputs at every public entry point: refused (never silently coerced), with a message
that names the argument, shows the value abbreviated and says what was expected."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from sklearn.utils import Bunch

from eenet_sklearn import (
    EarlyExitPolicy,
    EntropyPolicy,
    FixedExitPolicy,
    LearnedScorePolicy,
    MaxProbPolicy,
    PatiencePolicy,
)
from eenet_sklearn.metrics import budget_curve, oracle_accuracy

#: No message may be longer than this: values are abbreviated, never printed whole.
MAX_MESSAGE = 600

POLICY_CLASSES = [
    EarlyExitPolicy, MaxProbPolicy, EntropyPolicy, PatiencePolicy, FixedExitPolicy, LearnedScorePolicy
]
PREDICT_METHODS = ["predict", "predict_exit", "predict_proba", "exit_scores", "expected_cost"]


def _make(policy_class: type, costs, budget) -> object:
    if policy_class is EarlyExitPolicy:
        return EarlyExitPolicy(
            costs=costs, budget=budget, max_epochs=1, hidden_size=4, random_state=0, device="cpu"
        )
    return policy_class(costs=costs, budget=budget)


@pytest.fixture(scope="module")
def fitted(mnist: Bunch) -> dict[type, object]:
    """Every policy, fitted on a few hundred rows."""
    return {
        cls: _make(cls, mnist.costs, mnist.costs[1]).fit(mnist.X[:500], mnist.y[:500])
        for cls in POLICY_CLASSES
    }


def _check_message(excinfo: pytest.ExceptionInfo, *forbidden: str) -> None:
    message = str(excinfo.value)
    assert len(message) <= MAX_MESSAGE, message
    for text in forbidden:
        assert text not in message, message


def _ragged(X: np.ndarray) -> list:
    """Nested lists whose last sample lacks a class column."""
    rows = X.tolist()
    rows[-1][0] = rows[-1][0][:-1]
    return rows


# What each bad X is, what it raises, and the message: the argument named, what it got.
BAD_X = {
    "numeric strings": (
        lambda X: X.astype(str), TypeError,
        r"^X must be per-exit outputs, an array of real numbers .* got strings \(numeric strings "
        r"are not parsed: convert them to numbers first\): an array of shape \(\d+, 3, 10\)",
    ),
    "numeric strings in an object array": (
        lambda X: X.astype(str).astype(object), TypeError, r"^X must be .* got strings",
    ),
    "complex": (
        lambda X: X + 1j, ValueError,
        r"^X must be .* got complex numbers \(Complex data not supported: the imaginary part "
        r"would be lost\): an array of "
        r"shape \(\d+, 3, 10\) and dtype complex64: \[.*, \.\.\., .*\]",
    ),
    "empty": (
        lambda X: X[:0], ValueError,
        r"^X has 0 sample\(s\) \(shape=\(0, 3, 10\)\) while a minimum of 1 is required: "
        r"expected per-exit outputs",
    ),
    "ragged": (
        _ragged, ValueError, r"^X must be per-exit outputs, .* got \[\[\[.*inhomogeneous shape",
    ),
}


@pytest.mark.parametrize("case", list(BAD_X))
@pytest.mark.parametrize("policy_class", POLICY_CLASSES)
def test_bad_X_in_fit(policy_class: type, case: str, mnist: Bunch) -> None:
    make_X, error, match = BAD_X[case]
    X = make_X(mnist.X[:50])
    y = mnist.y[:50] if case != "empty" else mnist.y[:0]
    with pytest.raises(error, match=match) as excinfo:
        _make(policy_class, mnist.costs, mnist.costs[1]).fit(X, y)
    _check_message(excinfo)


@pytest.mark.parametrize("case", list(BAD_X))
@pytest.mark.parametrize("policy_class", POLICY_CLASSES)
def test_bad_X_in_prediction(policy_class: type, case: str, fitted: dict, mnist: Bunch) -> None:
    make_X, error, match = BAD_X[case]
    policy = fitted[policy_class]
    X = make_X(mnist.X_test[:50])
    for method in PREDICT_METHODS:
        with pytest.raises(error, match=match) as excinfo:
            getattr(policy, method)(X)
        _check_message(excinfo)
    y = mnist.y_test[:50] if case != "empty" else mnist.y_test[:0]
    with pytest.raises(error, match=match):
        policy.score(X, y)


@pytest.mark.parametrize(
    ("make_X", "error", "match"),
    [
        (lambda X: X.astype(str), TypeError, r"^X must be the outputs of exits 0\.\.k .* got strings"),
        (lambda X: X + 1j, ValueError, r"^X must be the outputs of exits 0\.\.k .* got complex numbers"),
        (lambda X: X[:0], ValueError, r"^X has 0 sample\(s\) \(shape=\(0, 2, 10\)\)"),
        (_ragged, ValueError, r"^X must be the outputs of exits 0\.\.k .*inhomogeneous shape"),
        (lambda X: X[:, 0], ValueError, r"^X must be 3-D \(n_samples, k \+ 1, n_classes\)"),
    ],
)
@pytest.mark.parametrize("policy_class", POLICY_CLASSES)
def test_bad_X_in_decide_at_exit(
    policy_class: type, make_X: Callable, error: type, match: str, fitted: dict, mnist: Bunch
) -> None:
    with pytest.raises(error, match=match) as excinfo:
        fitted[policy_class].decide_at_exit(make_X(mnist.X_test[:50, :2]))
    _check_message(excinfo)


BAD_Y = {
    "continuous": (
        lambda y: y + 0.5, ValueError,
        r"^y must be class labels \(integers or strings\), an array of shape \(n_samples,\), got "
        r"an array of shape \(\d+,\) and dtype float64: \[\d\.5, .*\]: Unknown label type: continuous",
    ),
    "complex": (lambda y: y + 1j, ValueError, r"^y must be class labels .* got complex numbers"),
    "ragged": (
        lambda y: [[label] for label in y[:-1]] + [[1, 2]], ValueError,
        r"^y must be class labels .*inhomogeneous shape",
    ),
    "2-D": (
        lambda y: np.stack([y, y], axis=1), ValueError,
        r"^y must be class labels .*y should be a 1d array",
    ),
}


@pytest.mark.parametrize("case", list(BAD_Y))
@pytest.mark.parametrize("policy_class", POLICY_CLASSES)
def test_bad_y(policy_class: type, case: str, fitted: dict, mnist: Bunch) -> None:
    make_y, error, match = BAD_Y[case]
    y = make_y(mnist.y[:50])
    with pytest.raises(error, match=match) as excinfo:
        _make(policy_class, mnist.costs, mnist.costs[1]).fit(mnist.X[:50], y)
    _check_message(excinfo)
    with pytest.raises(error, match=match):
        fitted[policy_class].score(mnist.X[:50], y)


def test_score_names_y_that_does_not_match_X(fitted: dict, mnist: Bunch) -> None:
    for policy in fitted.values():
        with pytest.raises(ValueError, match=r"^y has 49 labels but X has 50 samples"):
            policy.score(mnist.X_test[:50], mnist.y_test[:49])
        # Valid labels give the accuracy, as ClassifierMixin.score did.
        expected = np.mean(policy.predict(mnist.X_test) == mnist.y_test)
        assert policy.score(mnist.X_test, mnist.y_test) == pytest.approx(expected)


# --- costs and budget ---------------------------------------------------------------------
BAD_COSTS = {
    "numeric strings": (
        ["1", "2", "3"], TypeError,
        r"^costs must be an array of numbers, the cumulative cost of each exit, got strings "
        r"\(numeric strings are not parsed.*\['1', '2', '3'\]",
    ),
    "complex": (
        [1.0, 2.0 + 1j, 3.0], ValueError, r"^costs must be an array of numbers.*got complex numbers",
    ),
    "booleans": (np.array([True, True, True]), TypeError, r"^costs must be .* got booleans"),
    "ragged": ([1.0, [2.0, 3.0]], ValueError, r"^costs must be an array of numbers"),
}


@pytest.mark.parametrize("case", list(BAD_COSTS))
@pytest.mark.parametrize("policy_class", POLICY_CLASSES)
def test_bad_costs(policy_class: type, case: str, mnist: Bunch) -> None:
    costs, error, match = BAD_COSTS[case]
    with pytest.raises(error, match=match) as excinfo:
        _make(policy_class, costs, 2.0).fit(mnist.X[:50], mnist.y[:50])
    _check_message(excinfo)
    with pytest.raises(error, match=match):
        _make(policy_class, None, 2.0).fit(mnist.X[:50], mnist.y[:50], costs=costs)


def test_costs_print_at_six_significant_digits(mnist: Bunch) -> None:
    costs = [0.0123456789012, 0.0123456789012, 0.0456789012345]
    with pytest.raises(ValueError) as excinfo:
        MaxProbPolicy(costs=costs, budget=0.03).fit(mnist.X, mnist.y)
    assert str(excinfo.value) == (
        "costs must be strictly increasing (cumulative cost up to each exit), got "
        "[0.0123457, 0.0123457, 0.0456789]: costs[1]=0.0123457 is not above costs[0]=0.0123457."
    )
    # Two costs that differ beyond the sixth digit: that pair is shown in full.
    costs = [0.0123456789013, 0.0123456789012, 0.0456789012345]
    pair = r"costs\[1\]=0\.0123456789012 is not above costs\[0\]=0\.0123456789013"
    with pytest.raises(ValueError, match=pair):
        MaxProbPolicy(costs=costs, budget=0.03).fit(mnist.X, mnist.y)
    negative = r"^costs must be finite and positive, got \[-0\.0123457, 1\.0, 2\.0\]\.$"
    with pytest.raises(ValueError, match=negative):
        MaxProbPolicy(costs=[-0.0123456789, 1.0, 2.0], budget=1.5).fit(mnist.X, mnist.y)
    with pytest.raises(
        ValueError, match=r"^budget=0\.0123457 is below the first exit's cost 0\.0234568: no policy"
    ):
        MaxProbPolicy(costs=[0.0234567891, 1.0, 2.0], budget=0.0123456789).fit(mnist.X, mnist.y)


def test_long_costs_are_abbreviated(mnist: Bunch) -> None:
    costs = np.arange(1000.0, 0.0, -1.0)  # decreasing, 1000 entries
    with pytest.raises(ValueError) as excinfo:
        MaxProbPolicy(costs=costs, budget=2.0).fit(mnist.X, mnist.y)
    assert "[1000.0, 999.0, 998.0, ..., 3.0, 2.0, 1.0]" in str(excinfo.value)
    _check_message(excinfo, "500.0")


@pytest.mark.parametrize(
    ("budget", "error", "match"),
    [
        ("2.0", TypeError, "^budget must be a real number, got '2.0' of type str"),
        (2.0 + 0j, TypeError, r"^budget must be a real number, got \(2\+0j\) of type complex"),
        (list(range(100)), TypeError, r"^budget must be a real number, got \[0, 1, 2, 3, 4, 5, \.\.\.\]"),
    ],
)
def test_bad_budget_is_named_and_abbreviated(budget, error: type, match: str, mnist: Bunch) -> None:
    with pytest.raises(error, match=match) as excinfo:
        MaxProbPolicy(costs=[1.0, 2.0, 3.0], budget=budget).fit(mnist.X, mnist.y)
    _check_message(excinfo)


# --- the metrics ----------------------------------------------------------------------------
def test_oracle_accuracy_names_its_arguments(mnist: Bunch) -> None:
    X, y, costs = mnist.X[:50], mnist.y[:50], mnist.costs
    for case, (make_X, error, match) in BAD_X.items():
        with pytest.raises(error, match=match):
            oracle_accuracy(make_X(X), y[:0] if case == "empty" else y, costs, costs[1])
    for make_y, error, match in BAD_Y.values():
        with pytest.raises(error, match=match):
            oracle_accuracy(X, make_y(y), costs, costs[1])
    for bad_costs, error, match in BAD_COSTS.values():
        with pytest.raises(error, match=match):
            oracle_accuracy(X, y, bad_costs, 2.0)
    with pytest.raises(TypeError, match=r"^budget must be a real number, got '0\.03'"):
        oracle_accuracy(X, y, costs, "0.03")


@pytest.mark.parametrize("split", ["fit", "eval"])
def test_budget_curve_names_the_split(split: str, mnist: Bunch) -> None:
    X, y = mnist.X[:100], mnist.y[:100]

    def curve(X_bad=X, y_bad=y, costs=mnist.costs, budgets=(0.03,)) -> None:
        data = {"X_fit": X, "y_fit": y, "X_eval": X, "y_eval": y}
        data.update({f"X_{split}": X_bad, f"y_{split}": y_bad})
        budget_curve({"maxprob": MaxProbPolicy()}, **data, costs=costs, budgets=budgets, as_frame=False)

    for case, (make_X, error, match) in BAD_X.items():
        named = match.replace("^X ", f"^X_{split} ")
        with pytest.raises(error, match=named):
            curve(X_bad=make_X(X), y_bad=y[:0] if case == "empty" else y)
    for make_y, error, match in BAD_Y.values():
        named = match.replace("^y ", f"^y_{split} ")
        with pytest.raises(error, match=named):
            curve(y_bad=make_y(y))
    with pytest.raises(ValueError, match=f"^y_{split} has 99 labels but X_{split} has 100 samples"):
        curve(y_bad=y[:-1])
    with pytest.raises(TypeError, match=r"^costs must be an array of numbers.*got strings"):
        curve(costs=["1", "2", "3"])
    with pytest.raises(TypeError, match=r"^budgets must be a sequence of numbers, got 0\.03"):
        curve(budgets=0.03)
    with pytest.raises(TypeError, match=r"^budgets must be a real number, got '0\.03'"):
        curve(budgets=[0.03, "0.03"])
    with pytest.raises(ValueError, match=r"^budgets=0\.001 is below the first exit's cost 0\.019389"):
        curve(budgets=[0.001])
