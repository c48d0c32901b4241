"""Input validation: bad arguments fail loudly and name themselves; good ones are not altered."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
import threadpoolctl
from numpy.testing import assert_array_equal
from scipy.special import softmax
from sklearn.utils import Bunch

from eenet_sklearn import EarlyExitPolicy, EntropyPolicy, MaxProbPolicy
from eenet_sklearn._validation import check_exit_outputs
from eenet_sklearn.base import FitParameterOverrideWarning


@pytest.fixture(scope="module")
def fitted_maxprob(mnist: Bunch) -> MaxProbPolicy:
    return MaxProbPolicy(costs=mnist.costs, budget=mnist.costs[1]).fit(mnist.X, mnist.y)


def _with(X: np.ndarray, value: float) -> np.ndarray:
    """A copy of ``X`` with one entry replaced."""
    bad = np.array(X)
    bad[3, 1, 4] = value
    return bad


# --- X -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "match"),
    [((2000,), "X must be 3-D .* got 1-D .*X\\[None\\]"), ((2000, 3, 10, 1), "got 4-D")],
)
def test_x_ndim(shape: tuple, match: str, mnist: Bunch, fitted_maxprob: MaxProbPolicy) -> None:
    X = mnist.X.reshape(-1)[: np.prod(shape)].reshape(shape)
    with pytest.raises(ValueError, match=match):
        MaxProbPolicy(costs=mnist.costs, budget=mnist.costs[1]).fit(X, mnist.y)
    with pytest.raises(ValueError, match=match):
        fitted_maxprob.predict_exit(X)


def test_exits_differ_from_fit(fitted_eenet: EarlyExitPolicy, mnist: Bunch) -> None:
    with pytest.raises(ValueError, match=r"X has 2 exits, expected 3 \(one per entry of costs\)"):
        fitted_eenet.predict_exit(mnist.X_test[:, :2])
    # Flattened: sklearn's n_features_in_ wording, with what the features are.
    flat_two_exits = mnist.X_test[:, :2].reshape(len(mnist.X_test), -1)
    with pytest.raises(
        ValueError,
        match=r"X has 20 features, but EarlyExitPolicy is expecting 30 features as input "
        r"\(3 exits x 10 classes\)",
    ):
        fitted_eenet.predict(flat_two_exits)
    with pytest.raises(ValueError, match="X has 9 classes per exit, but the policy was fitted"):
        fitted_eenet.predict_proba(mnist.X_test[:, :, :9])


def test_class_columns_must_match_labels(mnist: Bunch) -> None:
    policy = MaxProbPolicy(costs=mnist.costs, budget=mnist.costs[1])
    with pytest.raises(ValueError, match="y has 10 distinct classes but X has 9 class columns"):
        policy.fit(mnist.X[:, :, :9], mnist.y)
    with pytest.raises(ValueError, match="X has 1 class column"):
        policy.fit(mnist.X[:, :, :1], mnist.y)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_logits(value: float, mnist: Bunch, fitted_eenet: EarlyExitPolicy) -> None:
    bad = _with(mnist.X, value)
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        EarlyExitPolicy(costs=mnist.costs, budget=mnist.costs[1]).fit(bad, mnist.y)
    for method in ("predict", "predict_exit", "predict_proba", "exit_scores"):
        with pytest.raises(ValueError, match="X contains NaN or infinity"):
            getattr(fitted_eenet, method)(bad)


# --- costs and budget ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("costs", "budget", "error", "match"),
    [
        ([1.0, 1.0, 2.0], 1.5, ValueError, "costs must be strictly increasing"),
        ([3.0, 2.0, 1.0], 3.0, ValueError, "costs must be strictly increasing"),
        ([0.0, 1.0, 2.0], 1.0, ValueError, "costs must be finite and positive"),
        ([-1.0, 1.0, 2.0], 1.0, ValueError, "costs must be finite and positive"),
        ([1.0, np.nan, 3.0], 2.0, ValueError, "costs must be finite and positive"),
        ([1.0, 2.0, np.inf], 2.0, ValueError, "costs must be finite and positive"),
        ([1.0, 2.0], 1.5, ValueError, r"X has 3 exits, expected 2 \(one per entry of costs\)"),
        ([1.0, 2.0, 3.0, 4.0], 2.0, ValueError, "X has 3 exits, expected 4"),
        ([1.0], 1.0, ValueError, "costs must be 1-D with one entry per exit"),
        ([[1.0, 2.0, 3.0]], 2.0, ValueError, "costs must be 1-D"),
        (["cheap", "mid", "dear"], 2.0, TypeError, "costs must be an array of numbers"),
        (None, 2.0, ValueError, "costs is required"),
    ],
)
def test_bad_costs(costs: object, budget: float, error: type, match: str, mnist: Bunch) -> None:
    with pytest.raises(error, match=match):
        MaxProbPolicy(costs=costs, budget=budget).fit(mnist.X, mnist.y)
    # The same checks apply to costs passed to fit.
    with pytest.raises(error, match=match):
        MaxProbPolicy().fit(mnist.X, mnist.y, costs=costs, budget=budget)


def test_flattened_width_must_be_a_multiple_of_the_exits(mnist: Bunch) -> None:
    flat = mnist.X.reshape(len(mnist.X), -1)  # 30 columns
    with pytest.raises(ValueError, match=r"X has 30 feature\(s\), which is not a multiple of the 4"):
        MaxProbPolicy(costs=[1.0, 2.0, 3.0, 4.0], budget=2.0).fit(flat, mnist.y)


@pytest.mark.parametrize(
    ("budget", "error", "match"),
    [
        (None, ValueError, "budget is required"),
        (np.nan, ValueError, "budget must be finite"),
        (np.inf, ValueError, "budget must be finite"),
        (-np.inf, ValueError, "budget must be finite"),
        (0.5, ValueError, r"budget=0.5 is below the first exit's cost 1.0"),
        (0.0, ValueError, "is below the first exit's cost"),
        ("2.0", TypeError, "budget must be a real number, got '2.0' of type str"),
        (True, TypeError, "budget must be a real number"),
        ([2.0], TypeError, "budget must be a real number"),
    ],
)
def test_bad_budget(budget: object, error: type, match: str, mnist: Bunch) -> None:
    costs = [1.0, 2.0, 3.0]
    with pytest.raises(error, match=match):
        EarlyExitPolicy(costs=costs, budget=budget).fit(mnist.X, mnist.y)
    with pytest.raises(error, match=match):
        EarlyExitPolicy(costs=costs).fit(mnist.X, mnist.y, budget=budget)


@pytest.mark.parametrize("policy_class", [EarlyExitPolicy, MaxProbPolicy, EntropyPolicy])
@pytest.mark.parametrize("factor", [1.0, 10.0])
def test_budget_at_or_above_last_cost_uses_last_exit(
    policy_class: type, factor: float, mnist: Bunch, make_eenet: Callable
) -> None:
    budget = mnist.costs[-1] * factor
    policy = make_eenet() if policy_class is EarlyExitPolicy else policy_class()
    policy.set_params(costs=mnist.costs, budget=budget).fit(mnist.X, mnist.y)
    assert_array_equal(policy.exit_fractions_, [0.0, 0.0, 1.0])
    assert_array_equal(policy.predict_exit(mnist.X_test), np.full(len(mnist.X_test), 2))
    assert policy.expected_cost(mnist.X_test) == pytest.approx(mnist.costs[-1])
    # Every prediction is then the last exit's.
    assert_array_equal(policy.predict(mnist.X_test), mnist.X_test[:, -1].argmax(axis=1))


def test_budget_accepts_numpy_scalars(mnist: Bunch) -> None:
    for budget in (np.float32(0.03), np.float64(0.03)):
        policy = MaxProbPolicy(costs=mnist.costs, budget=budget).fit(mnist.X, mnist.y)
        assert isinstance(policy.budget_, float) and policy.budget_ == pytest.approx(0.03)


# --- fit-time costs and budget -------------------------------------------------------------
def test_fit_time_budget_overrides_for_that_fit_only(make_eenet: Callable, mnist: Bunch) -> None:
    policy = make_eenet(costs=mnist.costs, budget=mnist.costs[1])
    with pytest.warns(FitParameterOverrideWarning, match=r"fit\(budget=0.048843\) overrides"):
        policy.fit(mnist.X, mnist.y, budget=mnist.costs[-1])
    assert policy.budget_ == mnist.costs[-1]
    assert policy.get_params()["budget"] == mnist.costs[1]
    # The fit-time budget is what the policy obeys: every sample at the last exit.
    assert_array_equal(policy.predict_exit(mnist.X_test), np.full(len(mnist.X_test), 2))
    # The next fit without override goes back to the constructor's budget.
    policy.fit(mnist.X, mnist.y)
    assert policy.budget_ == mnist.costs[1]
    assert np.mean(policy.predict_exit(mnist.X_test) == 2) < 0.9


def test_fit_time_values_equal_constructor_values(
    make_eenet: Callable, fitted_eenet: EarlyExitPolicy, mnist: Bunch
) -> None:
    # Same costs, budget and seed, passed to fit instead: the same policy.
    policy = make_eenet().fit(mnist.X, mnist.y, costs=mnist.costs, budget=mnist.costs[1])
    assert policy.get_params()["costs"] is None and policy.get_params()["budget"] is None
    assert_array_equal(policy.costs_, mnist.costs)
    assert_array_equal(policy.thresholds_, fitted_eenet.thresholds_)
    assert_array_equal(policy.predict_exit(mnist.X_test), fitted_eenet.predict_exit(mnist.X_test))


def test_fit_time_costs_override(mnist: Bunch, fitted_maxprob: MaxProbPolicy) -> None:
    costs, budget = mnist.costs, mnist.costs[1]
    policy = MaxProbPolicy(costs=costs, budget=budget)
    with pytest.warns(FitParameterOverrideWarning) as record:
        policy.fit(mnist.X, mnist.y, costs=costs * 1000, budget=budget * 1000)
    assert sorted(str(w.message).split("=")[0] for w in record) == ["fit(budget", "fit(costs"]
    assert_array_equal(policy.costs_, costs * 1000)
    assert policy.budget_ == budget * 1000
    assert policy.get_params()["costs"] is costs and policy.get_params()["budget"] == budget
    # Geometric quotas depend on cost ratios only: a change of unit changes no decision.
    assert_array_equal(policy.predict_exit(mnist.X_test), fitted_maxprob.predict_exit(mnist.X_test))
    assert policy.expected_cost(mnist.X_test) == pytest.approx(
        1000 * fitted_maxprob.expected_cost(mnist.X_test)
    )


# --- y and classes -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make_y", "match"),
    [
        (lambda y: y[:-1], "y has 1999 labels but X has 2000 samples"),
        (lambda y: np.zeros_like(y), r"y holds 1 class \(0\)"),
        (lambda y: y + 0.5, "Unknown label type: continuous"),
        (lambda y: None, "requires y to be passed, but the target y is None"),
        (lambda y: np.stack([y, y], axis=1), "y should be a 1d array"),
    ],
)
def test_bad_y(make_y: Callable, match: str, mnist: Bunch) -> None:
    with pytest.raises(ValueError, match=match):
        MaxProbPolicy(costs=mnist.costs, budget=mnist.costs[1]).fit(mnist.X, make_y(mnist.y))


@pytest.mark.parametrize(
    ("classes", "match"),
    [
        (list(range(9)), "classes must list 10 distinct labels"),
        ([0, 1, 2, 3, 4, 5, 6, 7, 8, 8], "classes must list 10 distinct labels"),
        (list(range(1, 11)), r"y holds labels not in classes: \[0\]"),
        ([f"digit {k}" for k in range(10)], "y holds labels not in classes"),
    ],
)
def test_bad_classes(classes: list, match: str, mnist: Bunch) -> None:
    policy = MaxProbPolicy(costs=mnist.costs, budget=mnist.costs[1], classes=classes)
    with pytest.raises(ValueError, match=match):
        policy.fit(mnist.X, mnist.y)


# Column order of the logits; deliberately not alphabetical.
DIGIT_NAMES = np.array(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
)


def test_string_labels(make_eenet: Callable, fitted_eenet: EarlyExitPolicy, mnist: Bunch) -> None:
    policy = make_eenet(costs=mnist.costs, budget=mnist.costs[1], classes=DIGIT_NAMES)
    policy.fit(mnist.X, DIGIT_NAMES[mnist.y])
    assert_array_equal(policy.classes_, DIGIT_NAMES)
    # Renaming the labels changes nothing the policy learns from.
    exits = policy.predict_exit(mnist.X_test)
    assert_array_equal(exits, fitted_eenet.predict_exit(mnist.X_test))
    # The prediction is the name of the argmax column at the chosen exit.
    columns = mnist.X_test[np.arange(len(exits)), exits].argmax(axis=1)
    assert_array_equal(policy.predict(mnist.X_test), DIGIT_NAMES[columns])
    assert policy.score(mnist.X_test, DIGIT_NAMES[mnist.y_test]) == pytest.approx(
        fitted_eenet.score(mnist.X_test, mnist.y_test)
    )


def test_classes_allow_labels_missing_from_y(make_eenet: Callable, mnist: Bunch) -> None:
    keep = mnist.y != 7
    X, y = mnist.X[keep], mnist.y[keep]
    with pytest.raises(ValueError, match="y has 9 distinct classes but X has 10 class columns"):
        make_eenet(costs=mnist.costs, budget=mnist.costs[1]).fit(X, y)
    policy = make_eenet(costs=mnist.costs, budget=mnist.costs[1], classes=np.arange(10))
    policy.fit(X, y)
    assert_array_equal(policy.classes_, np.arange(10))
    assert policy.predict_proba(mnist.X_test).shape == (len(mnist.X_test), 10)
    # Labels still name columns by position, the unseen column 7 included.
    exits = policy.predict_exit(mnist.X_test)
    expected = mnist.X_test[np.arange(len(exits)), exits].argmax(axis=1)
    assert_array_equal(policy.predict(mnist.X_test), expected)


# --- input_type ----------------------------------------------------------------------------
def test_probabilities_input(mnist: Bunch, fitted_maxprob: MaxProbPolicy) -> None:
    policy = MaxProbPolicy(costs=mnist.costs, budget=mnist.costs[1], input_type="proba")
    with pytest.raises(ValueError, match=r'X holds values outside \[0, 1\] but input_type="proba"'):
        policy.fit(mnist.X, mnist.y)
    half = softmax(mnist.X, axis=-1) / 2  # in [0, 1], rows summing to 0.5
    with pytest.raises(ValueError, match='X rows do not sum to 1 but input_type="proba"'):
        policy.fit(half, mnist.y)
    # Real distributions: the same decisions as from the logits they come from.
    policy.fit(softmax(mnist.X.astype(np.float64), axis=-1), mnist.y)
    proba_test = softmax(mnist.X_test.astype(np.float64), axis=-1)
    agree = policy.predict_exit(proba_test) == fitted_maxprob.predict_exit(mnist.X_test)
    assert agree.mean() >= 0.99  # float32 vs float64 softmax may move a tie at a threshold
    with pytest.raises(ValueError, match="X rows do not sum to 1"):
        policy.predict(proba_test / 2)


def test_unknown_input_type(mnist: Bunch) -> None:
    with pytest.raises(ValueError, match=r"input_type must be one of \('logits', 'proba'\)"):
        MaxProbPolicy(costs=mnist.costs, budget=0.03, input_type="logprob").fit(mnist.X, mnist.y)


# --- EENet hyperparameters -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"confidence": "certainty"}, ValueError, "confidence must hold distinct names"),
        ({"confidence": ("max_prob", "max_prob")}, ValueError, "confidence must hold distinct"),
        ({"confidence": (), "class_scores": False}, ValueError, "confidence is empty"),
        ({"hidden_size": 0}, ValueError, "hidden_size == 0, must be >= 1"),
        ({"hidden_size": 2.5}, TypeError, "hidden_size must be an instance of int"),
        ({"max_epochs": 0}, ValueError, "max_epochs == 0"),
        ({"batch_size": -1}, ValueError, "batch_size == -1"),
        ({"n_restarts": 0}, ValueError, "n_restarts == 0"),
        ({"lr": 0.0}, ValueError, "lr == 0.0, must be > 0"),
        ({"temperature": -1.0}, ValueError, "temperature == -1.0"),
        ({"kl_weight": -0.1}, ValueError, "kl_weight == -0.1, must be >= 0"),
        ({"device": "tpu"}, ValueError, r"device must be one of \('auto', 'cpu', 'cuda'\)"),
    ],
)
def test_bad_hyperparameters(params: dict, error: type, match: str, mnist: Bunch) -> None:
    policy = EarlyExitPolicy(costs=mnist.costs, budget=mnist.costs[1], **params)
    with pytest.raises(error, match=match):
        policy.fit(mnist.X, mnist.y)


# --- nothing the user passes is modified ---------------------------------------------------
@pytest.mark.parametrize("flatten", [False, True])
def test_inputs_are_not_modified(make_eenet: Callable, mnist: Bunch, flatten: bool) -> None:
    X = np.array(mnist.X).reshape(len(mnist.X), -1) if flatten else np.array(mnist.X)
    X_test, y, costs = np.array(mnist.X_test), np.array(mnist.y), np.array(mnist.costs)
    classes = np.arange(10)
    originals = [a.copy() for a in (X, X_test, y, costs, classes)]

    policy = make_eenet(costs=costs, budget=costs[1], classes=classes).fit(X, y)
    for method in ("predict", "predict_exit", "predict_proba", "exit_scores", "expected_cost"):
        getattr(policy, method)(X_test)
    policy.score(X_test, mnist.y_test)
    for after, before in zip((X, X_test, y, costs, classes), originals, strict=True):
        assert after.dtype == before.dtype
        assert_array_equal(after, before)

    # The fitted state holds its own copies: editing the caller's arrays changes nothing.
    expected_cost = policy.expected_cost(X_test)
    costs[:] = [5.0, 6.0, 7.0]
    classes[:] = 0
    assert_array_equal(policy.costs_, mnist.costs)
    assert_array_equal(policy.classes_, np.arange(10))
    assert policy.expected_cost(X_test) == expected_cost


# --- real dtypes: validated as given, never copied -------------------------------------------
#: Every real dtype an ndarray of outputs may have but long double, which float64 may not hold.
REAL_DTYPES = [
    np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
    np.float16, np.float32, np.float64,
]  # fmt: skip


def _integer_logits(X: np.ndarray, dtype: type) -> np.ndarray:
    """Logits every dtype holds exactly: rounded and shifted to [0, 100], or their signs as bools."""
    if dtype is np.bool_:
        return X > 0
    return np.clip(np.round(X) + 50, 0, 100).astype(dtype)


@pytest.mark.parametrize("dtype", REAL_DTYPES)
def test_real_arrays_are_validated_without_a_copy(dtype: type, mnist: Bunch) -> None:
    X = _integer_logits(mnist.X_test, dtype)
    checked = check_exit_outputs(X, 3, 10)
    assert checked.dtype == X.dtype and np.shares_memory(checked, X)
    flat = X.reshape(len(X), -1)
    assert np.shares_memory(check_exit_outputs(flat, 3, 10), flat)
    # Shapes are checked as for float arrays.
    with pytest.raises(ValueError, match="X has 9 classes per exit, but the policy was fitted with 10"):
        check_exit_outputs(X[:, :, :9], 3, 10)
    with pytest.raises(ValueError, match=r"X has 2 exits, expected 3"):
        check_exit_outputs(X[:, :2], 3, 10)
    # One-hot probabilities are distributions in every dtype; twice them are not.
    one_hot = np.eye(10, dtype=dtype)[np.arange(len(X)) % 10][:, None].repeat(3, axis=1)
    assert np.shares_memory(check_exit_outputs(one_hot, 3, 10, "proba"), one_hot)
    if dtype is not np.bool_:
        with pytest.raises(ValueError, match=r'X holds values outside \[0, 1\] but input_type="proba"'):
            check_exit_outputs(one_hot * 2, 3, 10, "proba")
        with pytest.raises(ValueError, match='X rows do not sum to 1 but input_type="proba"'):
            check_exit_outputs(one_hot * 0, 3, 10, "proba")


def test_non_finite_float16_is_refused_and_float16_distributions_accepted(mnist: Bunch) -> None:
    for value in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="X contains NaN or infinity"):
            check_exit_outputs(_with(mnist.X_test, value).astype(np.float16), 3, 10)
    # float16 rounds each probability by up to 2**-11: the sums (in float64) stay within 1e-3.
    proba = softmax(mnist.X_test.astype(np.float64), axis=-1).astype(np.float16)
    assert check_exit_outputs(proba, 3, 10, "proba") is proba


@pytest.mark.skipif(
    np.finfo(np.longdouble).max <= np.finfo(np.float64).max, reason="long double is float64 here"
)
def test_long_doubles_beyond_float64_are_refused(mnist: Bunch) -> None:
    X = mnist.X_test.astype(np.longdouble)
    checked = check_exit_outputs(X, 3, 10)
    assert checked.dtype == np.float64  # converted, as float64 is what every reader computes in
    X[3, 1, 4] = np.longdouble("1e400")  # finite here, infinite in float64
    with np.errstate(over="ignore"), pytest.raises(ValueError, match="X contains NaN or infinity"):
        check_exit_outputs(X, 3, 10)


def test_identical_values_decide_alike_in_every_real_dtype(
    mnist: Bunch, fitted_maxprob: MaxProbPolicy, fitted_eenet: EarlyExitPolicy
) -> None:
    for policy in (fitted_maxprob, fitted_eenet):
        for dtype in REAL_DTYPES:
            X = _integer_logits(mnist.X_test, dtype)
            widened = X.astype(np.float64)
            for method in ("predict_exit", "predict_proba", "exit_scores"):
                assert_array_equal(getattr(policy, method)(X), getattr(policy, method)(widened))


@pytest.mark.parametrize("dtype", [np.float16, np.int16])
def test_prediction_memory_stays_that_of_float32(
    dtype: type, mnist: Bunch, fitted_maxprob: MaxProbPolicy
) -> None:
    # 400,000 rows: a float64 copy of the float16 or int16 outputs would take 96 MB.
    X32 = np.tile(np.round(mnist.X_test), (200, 1, 1))

    def peak_beyond_output(X: np.ndarray) -> int:
        with threadpoolctl.threadpool_limits(1):  # one block at a time: the same peak on any machine
            tracemalloc.start()
            try:
                out = fitted_maxprob.predict_exit(X)
                return tracemalloc.get_traced_memory()[1] - out.nbytes
            finally:
                tracemalloc.stop()

    X = X32.astype(dtype)
    reference = peak_beyond_output(X32)
    peak = peak_beyond_output(X)
    assert peak <= 1.1 * reference + 2**20, (peak, reference)
    assert peak < X.size * 8 / 8  # an eighth of the float64 copy
