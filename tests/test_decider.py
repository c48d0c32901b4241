"""The incremental decider: the interface, hand-worked states, and equality with predict_exit."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from eenet_sklearn import (
    EarlyExitPolicy,
    EntropyPolicy,
    FixedExitPolicy,
    LearnedScorePolicy,
    MaxProbPolicy,
    PatiencePolicy,
)
from eenet_sklearn._decider import ExitDecider
from eenet_sklearn.datasets import load_exit_logits, make_exit_logits
from eenet_sklearn.metrics import budget_at_position
from eenet_sklearn.online import BudgetController

STATE_NAMES = {
    "MaxProbPolicy": (),
    "EntropyPolicy": (),
    "FixedExitPolicy": (),
    "PatiencePolicy": ("run", "previous"),
    "LearnedScorePolicy": ("scores", "votes", "top_vote"),
    "EarlyExitPolicy": ("utilities", "votes", "top_vote"),
}


@pytest.fixture(scope="module")
def fashion():
    return load_exit_logits("fashion_cnn4")


@pytest.fixture(scope="module")
def fitted(fashion) -> dict:
    budget = budget_at_position(fashion.costs, 0.3)
    X, y = fashion.val_logits[:3000], fashion.val_labels[:3000]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        policies = [
            MaxProbPolicy(costs=fashion.costs, budget=budget),
            EntropyPolicy(costs=fashion.costs, budget=budget),
            PatiencePolicy(costs=fashion.costs, budget=budget),
            FixedExitPolicy(costs=fashion.costs, budget=budget),
            LearnedScorePolicy(costs=fashion.costs, budget=budget),
            EarlyExitPolicy(
                costs=fashion.costs, budget=budget, max_epochs=3, hidden_size=8, random_state=0, device="cpu"
            ),
        ]
        return {type(policy).__name__: policy.fit(X, y) for policy in policies}


def _drive(decider, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Run the serving loop: exit by exit, keeping only the running rows."""
    n_samples = len(X)
    exits = np.full(n_samples, -1)
    proba = np.full((n_samples, X.shape[2]), np.nan)
    running = np.arange(n_samples)
    state = decider.initial_state(n_samples)
    sizes = []
    for k in range(decider.n_exits):
        sizes.append(len(running))
        leave, proba_k, state = decider.decide(k, X[running, k], state)
        assert leave.dtype == bool and leave.shape == (len(running),)
        assert proba_k.dtype == np.float64 and proba_k.shape == (len(running), X.shape[2])
        assert set(state) == set(decider.state_names)
        assert all(len(value) == len(running) for value in state.values())
        exits[running[leave]] = k
        proba[running[leave]] = proba_k[leave]
        running, state = running[~leave], decider.keep(state, ~leave)
    assert len(running) == 0  # everybody leaves by the last exit
    return exits, proba, sizes


@pytest.mark.parametrize("name", list(STATE_NAMES))
def test_the_serving_loop_decides_as_predict_exit(fitted, fashion, name) -> None:
    policy = fitted[name]
    X = fashion.test_logits[:2000]
    decider = policy.exit_decider()
    assert decider.state_names == STATE_NAMES[name]
    exits, proba, sizes = _drive(decider, X)
    assert_array_equal(exits, policy.predict_exit(X))
    assert_array_equal(proba, policy.predict_proba(X))  # bit for bit
    assert_array_equal(policy.classes_[proba.argmax(axis=1)], policy.predict(X))
    # The scores the decider compares are those exit_scores gives, bit for bit.
    state = decider.initial_state(len(X))
    for k in range(decider.n_exits):
        scores, _, state = decider.score(k, X[:, k], state)
        assert_array_equal(scores, policy.exit_scores(X)[:, k])
    assert sizes[0] == len(X)


def test_patience_state_by_hand() -> None:
    # Exit predictions of the one sample: 0, 0, 1, 1, 1. Runs: 1, 2, 1, 2, 3.
    X = np.array([[[2.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 3.0], [0.0, 2.0]]])
    fitting = np.concatenate([X, -X])
    policy = PatiencePolicy(costs=[1.0, 2.0, 3.0, 4.0, 5.0], patience=3).fit(fitting, [1, 0])
    decider = policy.exit_decider()
    state = decider.initial_state(1)
    runs, leaves = [], []
    for k in range(5):
        leave, _, state = decider.decide(k, X[:, k], state)
        runs.append(state["run"][0])
        leaves.append(bool(leave[0]))
        assert state["previous"][0] == X[0, k].argmax()
    assert runs == [1, 2, 1, 2, 3]
    assert leaves == [False, False, False, False, True]


def test_vote_counts_by_hand(fitted) -> None:
    # LearnedScorePolicy reads the voting measure: the state counts each class's votes.
    policy = fitted["LearnedScorePolicy"]
    decider = policy.exit_decider()
    rows = np.zeros((1, 10))
    predicted = [3, 3, 7, 7]
    state = decider.initial_state(1)
    for k, label in enumerate(predicted):
        outputs = rows.copy()
        outputs[0, label] = 5.0
        _, _, state = decider.score(k, outputs, state)
    expected = np.zeros(10, dtype=np.int64)
    expected[[3, 7]] = 2
    assert_array_equal(state["votes"][0], expected)
    assert state["top_vote"][0] == 2
    # The earlier scores are carried, one column per exit.
    assert np.all((state["scores"][0] >= 0) & (state["scores"][0] <= 1))


def test_eenet_carries_its_utilities_and_decides_at_constant_cost(fitted, fashion) -> None:
    policy = fitted["EarlyExitPolicy"]
    decider = policy.exit_decider()
    X = fashion.test_logits[:50]
    state = decider.initial_state(len(X))
    scores = policy.exit_scores(X)
    for k in range(decider.n_exits):
        _, _, state = decider.score(k, X[:, k], state)
        # Column k of the carried utilities is exit k's score; later columns are untouched.
        assert_array_equal(state["utilities"][:, : k + 1], scores[:, : k + 1])
        assert not state["utilities"][:, k + 1 :].any()


def test_the_state_passed_in_is_not_modified(fitted, fashion) -> None:
    decider = fitted["EarlyExitPolicy"].exit_decider()
    X = fashion.test_logits[:20]
    state = decider.initial_state(20)
    _, _, after_0 = decider.decide(0, X[:, 0], state)
    copy = {name: value.copy() for name, value in after_0.items()}
    decider.decide(1, X[:, 1], after_0)
    for name in copy:
        assert_array_equal(after_0[name], copy[name])
    assert not state["utilities"].any()


def test_keep_takes_masks_and_indices(fitted, fashion) -> None:
    decider = fitted["PatiencePolicy"].exit_decider()
    _, _, state = decider.decide(0, fashion.test_logits[:4, 0], decider.initial_state(4))
    kept = decider.keep(state, np.array([True, False, True, False]))
    assert_array_equal(kept["previous"], state["previous"][[0, 2]])
    assert_array_equal(decider.keep(state, [3, 1])["run"], state["run"][[3, 1]])


def test_an_empty_batch_is_decided(fitted) -> None:
    decider = fitted["EarlyExitPolicy"].exit_decider()
    leave, proba, state = decider.decide(0, np.empty((0, 10)), decider.initial_state(0))
    assert leave.shape == (0,) and proba.shape == (0, 10)
    assert state["utilities"].shape == (0, 4)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda d, s: d.decide(4, np.zeros((2, 10)), s), ValueError, r"k must be an exit index in \[0, 3\]"),
        (lambda d, s: d.decide(-1, np.zeros((2, 10)), s), ValueError, "k must be an exit index"),
        (lambda d, s: d.decide(0, np.zeros((2, 9)), s), ValueError, "9 classes per exit"),
        (lambda d, s: d.decide(0, np.zeros(10), s), ValueError, "outputs_k must be 2-D"),
        (lambda d, s: d.decide(0, np.full((2, 10), np.nan), s), ValueError, "outputs_k contains NaN"),
        (lambda d, s: d.decide(0, [["a"] * 10] * 2, s), TypeError, "outputs_k"),
        (lambda d, s: d.decide(0, np.zeros((3, 10)), s), ValueError, r"state\['utilities'\] has 2 rows"),
        (lambda d, s: d.decide(0, np.zeros((2, 10)), {}), ValueError, "state lacks 'utilities'"),
        (lambda d, s: d.decide(0, np.zeros((2, 10)), None), TypeError, "state must be a dict"),
        # Each state array as initial_state lays it out: mis-shaped, foreign, rounded or NaN ones are named.
        (
            lambda d, s: d.decide(0, np.zeros((2, 10)), {**s, "top_vote": s["top_vote"][:, None]}),
            ValueError,
            r"state\['top_vote'\] has shape \(2, 1\); expected an array of shape \(n_rows\) and dtype int64",
        ),
        (
            lambda d, s: d.decide(0, np.zeros((2, 10)), {**s, "utilities": np.zeros((2, 8))}),
            ValueError,
            r"state\['utilities'\] has shape \(2, 8\); expected an array of shape \(n_rows, 4\)",
        ),
        (
            lambda d, s: d.decide(0, np.zeros((2, 10)), {**s, "votes": s["votes"][:, :1]}),
            ValueError,
            r"state\['votes'\] has shape \(2, 1\); expected an array of shape \(n_rows, 10\)",
        ),
        (
            lambda d, s: d.decide(0, np.zeros((2, 10)), {**s, "utilities": np.full((2, 4), np.nan)}),
            ValueError,
            r"state\['utilities'\] contains NaN",
        ),
        (
            lambda d, s: d.decide(
                0, np.zeros((2, 10)), {**s, "utilities": s["utilities"].astype(np.float32)}
            ),
            TypeError,
            r"state\['utilities'\] has dtype float32; expected .* dtype float64",
        ),
        (
            lambda d, s: d.decide(0, np.zeros((2, 10)), {**s, "votes": s["votes"].astype(float)}),
            TypeError,
            r"state\['votes'\] has dtype float64; expected .* dtype int64",
        ),
        (lambda d, s: d.keep(s, [0.0, 1.0]), TypeError, "rows must be a boolean mask or integer indices"),
        (lambda d, s: d.initial_state(-1), ValueError, "n_samples must be an integer >= 0, got -1"),
        (lambda d, s: d.initial_state(2.0), TypeError, "n_samples must be an integer"),
    ],
)
def test_bad_calls_are_named(fitted, call, error, match) -> None:
    decider = fitted["EarlyExitPolicy"].exit_decider()
    with pytest.raises(error, match=match):
        call(decider, decider.initial_state(2))


def test_a_state_of_another_decider_is_refused(fitted, fashion) -> None:
    # A text model's decider (6 exits, 2 classes): its vote counts would land in other
    # rows' cells of this decider's 10-class counts.
    X, y = make_exit_logits(300, n_exits=6, n_classes=2, random_state=0)
    other = EarlyExitPolicy(
        costs=np.arange(1.0, 7.0), budget=3.0, max_epochs=1, hidden_size=4, random_state=0, device="cpu"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        foreign = other.fit(X, y).exit_decider().initial_state(4)
    decider = fitted["EarlyExitPolicy"].exit_decider()
    with pytest.raises(ValueError, match=r"state\['utilities'\] has shape \(4, 6\).*another decider"):
        decider.decide(0, fashion.test_logits[:4, 0], foreign)


def test_a_state_given_as_lists_is_read_as_arrays(fitted, fashion) -> None:
    decider = fitted["PatiencePolicy"].exit_decider()
    X = fashion.test_logits[:3]
    _, _, state = decider.decide(0, X[:, 0], decider.initial_state(3))
    as_lists = {name: value.tolist() for name, value in state.items()}
    for got, expected in zip(
        decider.decide(1, X[:, 1], as_lists), decider.decide(1, X[:, 1], state), strict=True
    ):
        if isinstance(got, dict):
            for name in expected:
                assert_array_equal(got[name], expected[name])
        else:
            assert_array_equal(got, expected)


def test_keep_reads_integers_as_indices(fitted, fashion) -> None:
    # NumPy's indexing: integer 0/1 rows are indices, not a mask (documented in keep).
    decider = fitted["PatiencePolicy"].exit_decider()
    _, _, state = decider.decide(0, fashion.test_logits[:4, 0], decider.initial_state(4))
    kept = decider.keep(state, np.array([1, 0, 1, 0]))
    assert_array_equal(kept["previous"], state["previous"][[1, 0, 1, 0]])


def test_prediction_does_not_check_states(fitted, fashion, monkeypatch) -> None:
    # The checks are the public methods' own: predict_exit's chunks run the internals.
    policy = fitted["EarlyExitPolicy"]
    X = fashion.test_logits[:2000]
    expected = policy.predict_exit(X)

    def refuse(*args, **kwargs):
        raise AssertionError("a state check in prediction")

    monkeypatch.setattr(ExitDecider, "_check_state", refuse)
    monkeypatch.setattr(ExitDecider, "keep", refuse)
    assert_array_equal(policy.predict_exit(X), expected)


def test_the_classes_are_a_read_only_copy(fitted, fashion) -> None:
    policy = fitted["MaxProbPolicy"]
    decider = policy.exit_decider()
    assert_array_equal(decider.classes, policy.classes_)
    expected = policy.predict(fashion.test_logits[:100])
    with pytest.raises(ValueError, match="read-only"):
        decider.classes[0] = 99
    assert_array_equal(policy.predict(fashion.test_logits[:100]), expected)


def test_an_unfitted_policy_has_no_decider() -> None:
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        MaxProbPolicy(costs=[1.0, 2.0], budget=1.5).exit_decider()


def test_decide_at_exit_is_the_decider_on_a_prefix(fitted, fashion) -> None:
    policy = fitted["EarlyExitPolicy"]
    X = fashion.test_logits[:500]
    decider = policy.exit_decider()
    state = decider.initial_state(len(X))
    for k in range(decider.n_exits):
        leave, proba, state = decider.decide(k, X[:, k], state)
        old_leave, old_proba = policy.decide_at_exit(X[:, : k + 1])
        assert_array_equal(leave, old_leave)
        assert_array_equal(proba, old_proba)


def test_the_controller_decider_shifts_the_thresholds(fitted, fashion) -> None:
    policy = fitted["MaxProbPolicy"]
    controller = BudgetController(policy)
    for batch in np.array_split(0.3 * fashion.test_logits[2000:4000], 10):
        controller.predict_exit(batch)  # harder traffic: thresholds lowered, more samples leave early
    X = fashion.test_logits[:2000]
    exits, _, _ = _drive(controller.exit_decider(), X)
    shifted = controller.thresholds_
    scores = policy.exit_scores(X)
    leaving = scores >= shifted
    leaving[:, -1] = True
    assert_array_equal(exits, leaving.argmax(axis=1))
    assert exits.mean() < policy.predict_exit(X).mean()


def test_the_decider_needs_neither_torch_nor_fitting_code(tmp_path, fitted, fashion) -> None:
    # Fitted in this process; decided in one where importing torch or skorch fails.
    import pickle

    policy = fitted["MaxProbPolicy"]
    path = tmp_path / "policy.pkl"
    path.write_bytes(pickle.dumps(policy))
    np.save(tmp_path / "X.npy", fashion.test_logits[:100])
    script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "skorch"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import pickle, numpy as np
policy = pickle.loads(open({str(path)!r}, "rb").read())
X = np.load({str(tmp_path / "X.npy")!r})
decider = policy.exit_decider()
state = decider.initial_state(len(X))
leave, proba, state = decider.decide(0, X[:, 0], state)
assert "torch" not in sys.modules
print(int(leave.sum()))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = int((policy.exit_scores(fashion.test_logits[:100])[:, 0] >= policy.thresholds_[0]).sum())
    assert int(done.stdout.strip()) == expected


@pytest.mark.parametrize("name", ["MaxProbPolicy", "EarlyExitPolicy"])
def test_prediction_memory_stays_near_the_output_size(fitted, fashion, name) -> None:
    # 10^6 samples of float32 logits (160 MB): beyond its result, prediction holds a few
    # chunks' temporaries only; keeping the probabilities and scores of every sample, as
    # it once did, would take 72 MB more, and a finiteness mask of X 40 MB.
    import tracemalloc

    policy = fitted[name]
    X = np.tile(fashion.test_logits, (100, 1, 1))
    policy.predict_exit(X[:10])  # imports and caches outside the measurement
    tracemalloc.start()
    try:
        exits = policy.predict_exit(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert exits.nbytes == 8 * len(X)
    assert peak - exits.nbytes < 32e6
