"""Classic budgeted exit rules under the same API as :class:`EarlyExitPolicy`.

Every rule here is an exit score per exit plus one threshold per exit, as in
:class:`~eenet_sklearn.base.BaseExitPolicy`: prediction, scoring and costs come
from the base class. The rules differ in the score and in how the thresholds are set:

- :class:`MaxProbPolicy`, :class:`EntropyPolicy`, :class:`LearnedScorePolicy`:
  MSDNet's geometric quotas, each exit's threshold admitting its quota;
- :class:`PatiencePolicy`: the length of the current run of agreeing predictions,
  compared with the patience;
- :class:`FixedExitPolicy`: a constant score, with thresholds that stop everyone at one exit.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from numbers import Integral
from typing import Any, Protocol

import numpy as np
from scipy.special import expit
from sklearn.base import clone
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.utils import check_scalar

from ._decider import row_product
from ._features import (
    _class_argmax,
    check_confidence,
    entropy_log_confidence,
    exit_log_proba_and_proba,
    feature_state_names,
    initial_feature_state,
    max_prob_logit,
    step_exit_features,
)
from ._thresholds import assign_exits, geometric_fractions, within_budget
from ._validation import check_budget
from .base import BaseExitPolicy


class _GeometricQuotaPolicy(BaseExitPolicy):
    """An exit score with MSDNet's geometric quotas and quota thresholds."""

    def _fit_policy(
        self, outputs: np.ndarray, correct: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        self._fit_scorer(outputs, correct)
        # Scored as prediction scores them, so thresholds fall on prediction-time scores.
        scores = self._chunked_exit_scores(outputs)
        return scores, self._quota_fractions(self.target_cost_)

    def _quota_fractions(self, cost: float) -> np.ndarray:
        return geometric_fractions(self.costs_, cost)

    def _unit_quota_fractions(self, share: float) -> np.ndarray:
        return geometric_fractions(self.costs_ / self.costs_[-1], share)

    def _fit_scorer(self, outputs: np.ndarray, correct: np.ndarray) -> None:
        """Learn what the score needs from the validated fitting outputs (nothing for a fixed measure)."""


class _ConfidenceThresholdPolicy(_GeometricQuotaPolicy):
    """A fixed confidence measure as the exit score, with MSDNet's geometric quotas."""

    # The scores are read off the log-probabilities alone.
    _step_reads_proba = False
    _step_calls_blas = False

    def __init__(self, costs=None, budget=None, *, input_type="logits", classes=None):
        self.costs = costs
        self.budget = budget
        self.input_type = input_type
        self.classes = classes


class MaxProbPolicy(_ConfidenceThresholdPolicy):
    """MSDNet's budgeted rule: the largest class probability as the exit score.

    The budgeted batch classification rule of Huang et al. [1]_. Exit quotas are
    geometric, ``p_k`` proportional to ``rho**k``, with ``rho`` chosen so that ``sum_k
    p_k costs[k]`` equals the budget; each exit's threshold admits its quota of the
    fitting samples.

    The exit score is ``logit(p_max) = log(p_max / (1 - p_max))``, computed from the
    logits in the log domain: a strictly increasing function of the largest class
    probability ``p_max``, so the rule is MSDNet's, but one that keeps ordering the
    samples where ``p_max`` itself rounds to 1.0 (in float32 from a margin of about 17
    between the two largest logits, common with over-confident networks), instead of
    tying them into one block that a threshold cannot split. ``expit(thresholds_)``
    gives the thresholds as probabilities.

    Parameters
    ----------
    costs : array-like of shape (n_exits,), default=None
        Cumulative cost of each exit, strictly increasing.
    budget : float, default=None
        Average cost per sample allowed; at or above ``costs[-1]`` every sample
        leaves at the last exit.
    input_type : {"logits", "proba"}, default="logits"
    classes : array-like of shape (n_classes,), default=None
        Label of each logit column (default: the sorted labels of ``y``).

    Attributes
    ----------
    thresholds_ : ndarray of shape (n_exits,)
        Exit score (``logit(p_max)``) a sample needs to leave at each exit; the last is
        ``-inf``. ``scipy.special.expit(thresholds_)`` are the probability thresholds.
    exit_fractions_, classes_, costs_, budget_, target_cost_, n_exits_, n_classes_
        As in :class:`EarlyExitPolicy`; ``target_cost_`` equals ``budget_`` (the
        quotas spend the whole budget).

    Raises
    ------
    ValueError, TypeError
        In :meth:`fit`, as :meth:`BaseExitPolicy.fit <eenet_sklearn.base.BaseExitPolicy.fit>`:
        missing or invalid ``costs`` and ``budget``, non-numeric, empty, ragged or
        non-finite ``X``, ``y`` that is not class labels matching ``X``.

    See Also
    --------
    EntropyPolicy : The same quotas, with entropy as the confidence.
    EarlyExitPolicy : EENet, which learns the exit scores and quotas under the budget.

    References
    ----------
    .. [1] G. Huang, D. Chen, T. Li, F. Wu, L. van der Maaten and K. Q. Weinberger,
       "Multi-Scale Dense Networks for Resource Efficient Image Classification",
       ICLR 2018, arXiv:1703.09844 (budgeted batch classification).

    Examples
    --------
    >>> from eenet_sklearn import MaxProbPolicy
    >>> from eenet_sklearn.datasets import load_exit_logits
    >>> data = load_exit_logits("mnist_mlp3")
    >>> policy = MaxProbPolicy(costs=data.costs, budget=0.03)
    >>> policy = policy.fit(data.val_logits, data.val_labels)
    >>> round(policy.expected_cost(data.val_logits), 3)  # quotas that spend the budget
    0.03
    >>> bool(policy.exit_fractions_[0] > policy.exit_fractions_[1] > policy.exit_fractions_[2])
    True
    """

    def _exit_step(self, k, log_proba, proba, state, weights):
        return max_prob_logit(log_proba), state


class EntropyPolicy(_ConfidenceThresholdPolicy):
    """BranchyNet's rule: entropy confidence ``1 - H(p) / log C`` as the exit score.

    BranchyNet [1]_ leaves at the first exit whose entropy is below a threshold; here
    the thresholds come from the quotas of :class:`MaxProbPolicy` (MSDNet's), so that
    the rule meets a budget. Same parameters and attributes as :class:`MaxProbPolicy`.

    The exit score is ``-log(H / log C)``, computed from the logits in the log domain:
    a strictly increasing function of the confidence ``c = 1 - H / log C`` (``c =
    -expm1(-score)``), so the rule is the same, but one that keeps ordering the samples
    where ``c`` itself rounds to 1.0, as it does for over-confident networks. So
    ``thresholds_`` hold ``-log(1 - c)`` for the confidence thresholds ``c``
    (``-expm1(-thresholds_)``).

    Raises
    ------
    ValueError, TypeError
        In :meth:`fit`, as :meth:`BaseExitPolicy.fit <eenet_sklearn.base.BaseExitPolicy.fit>`:
        missing or invalid ``costs`` and ``budget``, non-numeric, empty, ragged or
        non-finite ``X``, ``y`` that is not class labels matching ``X``.

    See Also
    --------
    MaxProbPolicy : The same quotas, with the largest probability as the confidence.

    References
    ----------
    .. [1] S. Teerapittayanon, B. McDanel and H. T. Kung, "BranchyNet: Fast Inference
       via Early Exiting from Deep Neural Networks", ICPR 2016.

    Examples
    --------
    >>> from eenet_sklearn import EntropyPolicy
    >>> policy = EntropyPolicy(costs=[1.0, 2.0], budget=1.5)
    >>> X = [[[5.0, 0.0], [5.0, 0.0]], [[0.1, 0.0], [0.0, 5.0]]]  # sure, then unsure at exit 0
    >>> policy.fit(X, [0, 1]).predict_exit(X)
    array([0, 1])
    """

    def _exit_step(self, k, log_proba, proba, state, weights):
        return entropy_log_confidence(log_proba), state


class _FittedClassifier(Protocol):
    """What :class:`LearnedScorePolicy` uses of a fitted scikit-learn classifier."""

    classes_: np.ndarray

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...


#: What an exit's score is computed from (:func:`_score_form`): a constant, a logistic
#: regression's weights as a float64 ``(n_inputs, 1)`` column and its intercept, or a
#: classifier asked for its ``predict_proba``.
_ScoreForm = float | tuple[np.ndarray, float] | _FittedClassifier


def _score_form(estimator: Any) -> _ScoreForm:
    """The form :func:`_positive_proba` computes the scores of an entry of ``estimators_`` from.

    The classifiers the library chooses are scored here, each row from that row alone:
    one that never saw a 1 ("exit is right") scores 0, a ``DummyClassifier(strategy=
    "prior")`` the prior of 1, a binary ``LogisticRegression`` ``expit`` of its decision
    value (its ``predict_proba``), from its weights and intercept. Any other classifier
    is returned as it is (hence ``Any``: what is read depends on the class).
    """
    classes = list(estimator.classes_)
    if 1 not in classes:
        return 0.0
    if type(estimator) is DummyClassifier and estimator.strategy == "prior":
        return float(estimator.class_prior_[classes.index(1)])
    # Where scikit-learn still has multi_class, "multinomial" gives softmax([-d, d]) instead.
    if (
        type(estimator) is LogisticRegression
        and len(classes) == 2
        and getattr(estimator, "multi_class", "auto") != "multinomial"
    ):
        column = np.asarray(estimator.coef_, dtype=np.float64).reshape(-1, 1)
        return column, float(np.reshape(estimator.intercept_, -1)[0])
    return estimator


def _positive_proba(form: _ScoreForm, inputs: np.ndarray) -> np.ndarray:
    """Probability of class 1 ("exit is right") of each row of ``inputs``: float64.

    For a form of :func:`_score_form` other than a classifier, every row's value is
    computed from that row alone: ``expit`` of the decision value, a
    :func:`~eenet_sklearn._decider.row_product` (scikit-learn's ``predict_proba`` to
    about 1e-15, whose BLAS product rounds a row differently with the number of rows).
    A classifier's own ``predict_proba`` otherwise, row-invariant or not as it is.
    """
    n_rows = inputs.shape[0]
    if isinstance(form, float):
        return np.full(n_rows, form)
    if isinstance(form, tuple):
        column, intercept = form
        decision = row_product(inputs, column)[:n_rows, 0]
        decision += intercept
        return expit(decision)
    proba = form.predict_proba(inputs)[:, list(form.classes_).index(1)]
    return np.asarray(proba, dtype=np.float64)


class LearnedScorePolicy(_GeometricQuotaPolicy):
    """A scikit-learn classifier per exit predicting "this exit is right", with MSDNet's quotas.

    The classifier for exit ``k`` reads the causal features EENet's scorers read
    (the chosen confidence measures and the class probabilities of exit ``k``) and
    the scores of exits ``0..k-1``, and is fitted to whether exit ``k``'s argmax is
    the true label. Its probability of "right" is the exit score; the quotas and
    thresholds are those of :class:`MaxProbPolicy`. Unlike EENet, the scorers are
    trained independently of the budget: this is the plain correctness classifier
    EENet's joint, budget-aware training should beat.

    Parameters
    ----------
    costs : array-like of shape (n_exits,), default=None
        Cumulative cost of each exit, strictly increasing.
    budget : float, default=None
        Average cost per sample allowed.
    estimator : classifier with ``predict_proba``, default=None
        Cloned once per exit; ``None`` means ``LogisticRegression(max_iter=1000)``.
        An exit that is right on every fitting sample (or on none) gets a constant
        score of 1 (or 0) instead, since no classifier can be fitted on one class.
        The scores of a binary ``LogisticRegression`` (``expit`` of its decision
        value) and of a ``DummyClassifier(strategy="prior")`` are computed here, each
        row from that row alone, so decisions keep the batch invariance of
        :class:`~eenet_sklearn.base.BaseExitPolicy`. Any other classifier's scores are
        its ``predict_proba``, and a sample's exit is then independent of the other
        rows of the call only as far as that ``predict_proba`` computes each row as
        it would alone (a BLAS product, for one, rounds a row differently with the
        number of rows).
    confidence : tuple of str, default=("max_prob", "entropy", "voting")
        Confidence measures the classifiers read; any of ``"max_prob"``,
        ``"entropy"``, ``"voting"``, ``"margin"``.
    class_scores : bool, default=True
        Whether the classifiers also read the whole probability vector of their exit.
    input_type : {"logits", "proba"}, default="logits"
    classes : array-like of shape (n_classes,), default=None
        Label of each logit column (default: the sorted labels of ``y``).

    Attributes
    ----------
    estimators_ : list of fitted classifiers, one per exit
        A ``DummyClassifier`` for an exit whose correctness is constant on the fitting data.
    thresholds_, exit_fractions_, classes_, costs_, budget_, target_cost_, n_exits_, n_classes_
        As in :class:`EarlyExitPolicy`; ``target_cost_`` equals ``budget_`` (the
        quotas spend the whole budget).

    Raises
    ------
    ValueError, TypeError
        In :meth:`fit`, as :meth:`BaseExitPolicy.fit <eenet_sklearn.base.BaseExitPolicy.fit>`:
        missing or invalid ``costs`` and ``budget``, non-numeric, empty, ragged or
        non-finite ``X``, ``y`` that is not class labels matching ``X``.
        Also ``ValueError`` for unknown or repeated ``confidence`` names, and
        ``TypeError`` for an ``estimator`` without ``fit`` and ``predict_proba``.

    See Also
    --------
    EarlyExitPolicy : Scorers trained jointly with the exit distribution, under the budget.
    MaxProbPolicy : The same quotas on a fixed confidence measure.

    Examples
    --------
    >>> from eenet_sklearn import LearnedScorePolicy
    >>> from eenet_sklearn.datasets import load_exit_logits
    >>> data = load_exit_logits("mnist_mlp3")
    >>> policy = LearnedScorePolicy(costs=data.costs, budget=0.03)
    >>> policy = policy.fit(data.val_logits, data.val_labels)
    >>> len(policy.estimators_)
    3
    """

    def __init__(
        self,
        costs=None,
        budget=None,
        *,
        estimator=None,
        confidence=("max_prob", "entropy", "voting"),
        class_scores=True,
        input_type="logits",
        classes=None,
    ):
        self.costs = costs
        self.budget = budget
        self.estimator = estimator
        self.confidence = confidence
        self.class_scores = class_scores
        self.input_type = input_type
        self.classes = classes

    def _check_hyperparameters(self) -> dict[str, object]:
        confidence = check_confidence(self.confidence, self.class_scores)
        if self.estimator is not None and not (
            hasattr(self.estimator, "fit") and hasattr(self.estimator, "predict_proba")
        ):
            raise TypeError(
                "estimator must be a classifier with fit and predict_proba, got "
                f"{self.estimator!r}."
            )
        return {"_confidence": confidence}

    def _fit_scorer(self, outputs: np.ndarray, correct: np.ndarray) -> None:
        base = LogisticRegression(max_iter=1000) if self.estimator is None else self.estimator
        # The classifiers are fitted on the inputs the per-exit step gives them at prediction.
        state = self._step_initial_state(outputs.shape[0])
        estimators = []
        for k in range(self.n_exits_):
            log_proba, proba = exit_log_proba_and_proba(outputs[:, k], self.input_type)
            inputs, state = self._step_inputs(k, log_proba, proba, state)
            target = correct[:, k].astype(np.int64)
            # One class only: no classifier can be fitted; the prior is the constant answer.
            single = target.min() == target.max()
            estimator = DummyClassifier(strategy="prior") if single else clone(base)
            estimator.fit(inputs, target)
            estimators.append(estimator)
            # As prediction scores (_exit_step), bit for bit: later exits learn from those scores.
            state["scores"][:, k] = _positive_proba(_score_form(estimator), inputs)
        self.estimators_ = estimators

    def _step_state_names(self) -> tuple[str, ...]:
        return ("scores", *feature_state_names(self._confidence))

    def _step_initial_state(self, n_samples: int) -> dict[str, np.ndarray]:
        return {
            "scores": np.zeros((n_samples, self.n_exits_), dtype=np.float64),
            **initial_feature_state(n_samples, self.n_classes_, self._confidence),
        }

    def _step_inputs(
        self, k: int, log_proba: np.ndarray, proba: np.ndarray, state: dict
    ) -> tuple[np.ndarray, dict]:
        """Classifier ``k``'s inputs (exit ``k``'s features, the earlier scores) and the state."""
        features, state = step_exit_features(
            k, proba, log_proba, state, self._confidence, self.class_scores
        )
        state["scores"] = state["scores"].copy()
        return np.hstack([features, state["scores"][:, :k]]), state

    def _step_weights(self) -> list[_ScoreForm]:
        return [_score_form(estimator) for estimator in self.estimators_]

    def _exit_step(self, k, log_proba, proba, state, weights):
        inputs, state = self._step_inputs(k, log_proba, proba, state)
        scores = _positive_proba(weights[k], inputs)
        state["scores"][:, k] = scores
        return scores, state


def _warn_over_budget(policy: str, setting: str, cost: float, budget: float) -> None:
    warnings.warn(
        f"{policy} with {setting} spends {cost:.6g} per sample on the fitting data, above "
        f"budget={budget:.6g}.",
        UserWarning,
        stacklevel=4,
    )


class PatiencePolicy(BaseExitPolicy):
    """PABEE's rule: leave once the prediction has stayed the same for ``patience`` exits.

    Patience-based early exit (PABEE, Zhou et al. [1]_). A sample leaves at the first
    exit ``k >= min_exit`` where exits ``k - patience + 1, ..., k`` all predict the same
    class (so ``patience=1`` sends everyone out at ``min_exit``); the last exit takes
    the rest. PABEE's patience ``t`` counts *unchanged* predictions, and is ``patience -
    1`` here.

    Settings left as ``None`` are chosen on the fitting data: among every
    ``patience`` in ``1..n_exits`` and ``min_exit`` in ``0..n_exits - 1``, the most
    accurate whose mean cost on the fitting data is within the budget (ties go to
    the cheaper, then to the smaller ``min_exit``, then to the smaller patience).
    With both free some setting always fits, since ``patience=1, min_exit=0``
    costs ``costs[0] <= budget``. When a fixed setting leaves no candidate within
    budget, the cheapest candidate is used (ties to the more accurate) and a
    ``UserWarning`` says so; a setting fixed entirely is used as given, with the
    same warning if it overspends a given budget.

    Parameters
    ----------
    costs : array-like of shape (n_exits,), default=None
        Cumulative cost of each exit, strictly increasing.
    budget : float, default=None
        Average cost per sample allowed. Required when ``patience`` is ``None``;
        when ``patience`` is given and ``min_exit`` is ``None``, a budget makes
        ``min_exit`` chosen, and without one ``min_exit`` is 0.
    patience : int >= 1, default=None
        Number of consecutive exits that must agree; ``None``: chosen under the budget.
    min_exit : int in [0, n_exits - 1], default=None
        First exit a sample may leave at; ``None``: chosen under the budget (or 0).
    input_type : {"logits", "proba"}, default="logits"
    classes : array-like of shape (n_classes,), default=None
        Label of each logit column (default: the sorted labels of ``y``).

    Attributes
    ----------
    patience_ : int
        The patience used.
    min_exit_ : int
        The minimum exit used.
    thresholds_ : ndarray of shape (n_exits,)
        ``+inf`` before ``min_exit_``, then ``patience_``, and ``-inf`` at the last exit:
        :meth:`exit_scores` gives the length of the current run of agreeing predictions.
    exit_fractions_, classes_, costs_, budget_, target_cost_, n_exits_, n_classes_
        As in :class:`EarlyExitPolicy`; ``budget_`` and ``target_cost_`` are ``None``
        when no budget was given.

    Raises
    ------
    ValueError, TypeError
        In :meth:`fit`, as :meth:`BaseExitPolicy.fit <eenet_sklearn.base.BaseExitPolicy.fit>`:
        missing or invalid ``costs`` and ``budget``, non-numeric, empty, ragged or
        non-finite ``X``, ``y`` that is not class labels matching ``X``.
        Also ``ValueError`` without a budget when ``patience`` is ``None``, and for
        ``patience < 1`` or ``min_exit`` outside ``[0, n_exits - 1]`` (``TypeError``
        when not an integer).

    Warns
    -----
    UserWarning
        In :meth:`fit`, when the setting used spends more than the budget on the
        fitting data.

    See Also
    --------
    FixedExitPolicy : Every sample at one exit.
    EarlyExitPolicy : EENet, which learns when to leave under the budget.

    References
    ----------
    .. [1] W. Zhou, C. Xu, T. Ge, J. McAuley, K. Xu and F. Wei, "BERT Loses Patience:
       Fast and Robust Inference with Early Exit", NeurIPS 2020, arXiv:2006.04152.

    Examples
    --------
    >>> from eenet_sklearn import PatiencePolicy
    >>> from eenet_sklearn.datasets import load_exit_logits
    >>> data = load_exit_logits("mnist_mlp3")
    >>> policy = PatiencePolicy(costs=data.costs, budget=0.03)
    >>> policy = policy.fit(data.val_logits, data.val_labels)
    >>> policy.expected_cost(data.val_logits) <= 0.03
    True
    """

    _step_calls_blas = False

    def __init__(
        self,
        costs=None,
        budget=None,
        *,
        patience=None,
        min_exit=None,
        input_type="logits",
        classes=None,
    ):
        self.costs = costs
        self.budget = budget
        self.patience = patience
        self.min_exit = min_exit
        self.input_type = input_type
        self.classes = classes

    def _check_hyperparameters(self) -> dict[str, object]:
        if self.patience is not None:
            check_scalar(self.patience, "patience", Integral, min_val=1)
        if self.min_exit is not None:
            check_scalar(self.min_exit, "min_exit", Integral, min_val=0)
        return {}

    def _check_budget(self, budget: object, costs: np.ndarray) -> float | None:
        if self.min_exit is not None:
            check_scalar(self.min_exit, "min_exit", Integral, min_val=0, max_val=len(costs) - 1)
        if budget is None:
            if self.patience is None:
                raise ValueError(
                    "PatiencePolicy needs a budget to choose its patience: pass budget=... "
                    "or patience=..."
                )
            return None
        return check_budget(budget, costs)

    def _fit_thresholds(
        self, outputs: np.ndarray, correct: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        n_exits = self.n_exits_
        free = self.budget_ is not None
        patiences: Sequence[int] = (
            [self.patience] if self.patience is not None else range(1, n_exits + 1)
        )
        min_exits: Sequence[int]
        if self.min_exit is not None:
            min_exits = [self.min_exit]
        else:
            min_exits = range(n_exits) if free else [0]
        runs = self._chunked_exit_scores(outputs)
        rows = np.arange(runs.shape[0])
        candidates = []
        for min_exit in min_exits:
            for patience in patiences:
                thresholds = _patience_thresholds(patience, min_exit, n_exits)
                exits = assign_exits(runs, thresholds)
                accuracy = float(correct[rows, exits].mean())
                cost = float(self.costs_[exits].mean())
                candidates.append((accuracy, cost, patience, min_exit, thresholds, exits))
        feasible = [c for c in candidates if not free or within_budget(c[1], self.budget_)]
        if feasible:
            # max() keeps the first of equals: the enumeration order breaks exact ties.
            best = max(feasible, key=lambda c: (c[0], -c[1]))
        else:
            best = min(candidates, key=lambda c: (c[1], -c[0]))
            setting = f"patience={best[2]}, min_exit={best[3]}"
            if len(candidates) > 1:
                setting += " (the cheapest setting allowed)"
            _warn_over_budget("PatiencePolicy", setting, best[1], self.budget_)
        _, _, self.patience_, self.min_exit_, thresholds, exits = best
        return thresholds, exits

    def _step_state_names(self) -> tuple[str, ...]:
        return ("run", "previous")

    def _step_initial_state(self, n_samples: int) -> dict[str, np.ndarray]:
        return {
            "run": np.zeros(n_samples, dtype=np.float64),
            "previous": np.full(n_samples, -1, dtype=np.int64),
        }

    def _exit_step(self, k, log_proba, proba, state, weights):
        # The score: how many exits up to k in a row predict exit k's class (the argmax
        # of its probabilities, as predict takes it), 1 where exit k disagrees with k - 1.
        predictions = _class_argmax(proba)
        run = np.where(predictions == state["previous"], state["run"] + 1.0, 1.0)
        return run, {"run": run, "previous": predictions}


def _patience_thresholds(patience: int, min_exit: int, n_exits: int) -> np.ndarray:
    """Run-length thresholds: nobody leaves before ``min_exit``, everybody by the last exit."""
    thresholds = np.full(n_exits, float(patience))
    thresholds[:min_exit] = np.inf
    thresholds[-1] = -np.inf
    return thresholds


class FixedExitPolicy(BaseExitPolicy):
    """Every sample leaves at one exit: the given one, or the deepest within budget.

    The static baseline (a truncated network). The exit score is a constant 0; the
    thresholds are ``+inf`` before the exit and ``-inf`` from it on.

    Parameters
    ----------
    costs : array-like of shape (n_exits,), default=None
        Cumulative cost of each exit, strictly increasing.
    budget : float, default=None
        Average cost per sample allowed; required when ``exit`` is ``None``.
    exit : int in [0, n_exits - 1], default=None
        The exit every sample leaves at; ``None``: the deepest exit whose cost is
        within the budget. A given exit costing more than a given budget is used
        anyway, with a ``UserWarning``.
    input_type : {"logits", "proba"}, default="logits"
    classes : array-like of shape (n_classes,), default=None
        Label of each logit column (default: the sorted labels of ``y``).

    Attributes
    ----------
    exit_ : int
        The exit used.
    thresholds_, exit_fractions_, classes_, costs_, budget_, target_cost_, n_exits_, n_classes_
        As in :class:`EarlyExitPolicy`; ``budget_`` and ``target_cost_`` are ``None``
        when no budget was given.

    Raises
    ------
    ValueError, TypeError
        In :meth:`fit`, as :meth:`BaseExitPolicy.fit <eenet_sklearn.base.BaseExitPolicy.fit>`:
        missing or invalid ``costs`` and ``budget``, non-numeric, empty, ragged or
        non-finite ``X``, ``y`` that is not class labels matching ``X``.
        Also ``ValueError`` without a budget when ``exit`` is ``None``, and for an
        ``exit`` outside ``[0, n_exits - 1]`` (``TypeError`` when not an integer).

    Warns
    -----
    UserWarning
        In :meth:`fit`, when the given ``exit`` costs more than the given budget.

    See Also
    --------
    PatiencePolicy : Leave once the predictions agree.
    eenet_sklearn.metrics.oracle_accuracy : The bound no policy can pass.

    Examples
    --------
    >>> from eenet_sklearn import FixedExitPolicy
    >>> policy = FixedExitPolicy(costs=[1.0, 2.0, 4.0], budget=3.0)
    >>> X = [[[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0], [0.0, 3.0]]]
    >>> policy.fit(X, [0, 1]).exit_
    1
    """

    # The score is a constant.
    _step_reads_proba = False
    _step_calls_blas = False

    def __init__(
        self, costs=None, budget=None, *, exit=None, input_type="logits", classes=None
    ):
        self.costs = costs
        self.budget = budget
        self.exit = exit
        self.input_type = input_type
        self.classes = classes

    def _check_hyperparameters(self) -> dict[str, object]:
        if self.exit is not None:
            check_scalar(self.exit, "exit", Integral, min_val=0)
        return {}

    def _check_budget(self, budget: object, costs: np.ndarray) -> float | None:
        if self.exit is not None:
            check_scalar(self.exit, "exit", Integral, min_val=0, max_val=len(costs) - 1)
            if budget is None:
                return None
        elif budget is None:
            raise ValueError(
                "FixedExitPolicy needs a budget to choose its exit: pass budget=... or exit=..."
            )
        return check_budget(budget, costs)

    def _fit_thresholds(
        self, outputs: np.ndarray, correct: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.exit is not None:
            self.exit_ = int(self.exit)
            if self.budget_ is not None and not within_budget(
                self.costs_[self.exit_], self.budget_
            ):
                _warn_over_budget(
                    "FixedExitPolicy", f"exit={self.exit_}", self.costs_[self.exit_], self.budget_
                )
        else:
            # check_budget guarantees budget_ >= costs_[0], so some exit qualifies.
            within = [within_budget(cost, self.budget_) for cost in self.costs_]
            self.exit_ = int(np.flatnonzero(within)[-1])
        thresholds = np.where(np.arange(self.n_exits_) < self.exit_, np.inf, -np.inf)
        return thresholds, np.full(outputs.shape[0], self.exit_, dtype=np.int64)

    def _exit_step(self, k, log_proba, proba, state, weights):
        return np.zeros(log_proba.shape[0], dtype=np.float64), state
