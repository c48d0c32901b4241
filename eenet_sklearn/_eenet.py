"""``EarlyExitPolicy``: the EENet budgeted exit policy as a scikit-learn classifier."""

from __future__ import annotations

import contextlib
import threading
from functools import partial
from numbers import Integral, Real
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import expit
from sklearn.utils import check_random_state, check_scalar

from ._decider import one_thread, padded_rows, row_product
from ._features import (
    check_confidence,
    exit_features,
    feature_state_names,
    initial_feature_state,
    n_features,
    step_exit_features,
)
from ._thresholds import gpu_available, quota_thresholds, tilt_to_budget
from .base import BaseExitPolicy

if TYPE_CHECKING:
    from skorch import NeuralNet

    from ._scoring_network import ExitScorer

# torch, skorch and the scorer's module are imported where the scorer is trained or run:
# a fitted policy predicts with NumPy alone, so that serving it needs no torch.

_DEVICES = ("auto", "cpu", "cuda")
#: ``spend_less``: how many evenly spaced mean costs below the budget are tried, and by
#: how many standard errors of the paired accuracy difference a cheaper operating point
#: must beat the full budget on the fitting data to be chosen: on a network that
#: overthinks there (an exit more accurate than the last by ``_SPEND_LESS_Z`` standard
#: errors), and on others.
_N_CANDIDATE_COSTS = 24
_OVERTHINKING_Z = 1.0
_SPEND_LESS_Z = 2.0
_GLOBAL_RNG_LOCK = threading.Lock()
#: Parameters added after policies were first pickled, with the value that reproduces the
#: fit of a policy pickled before each existed: no step budget (``max_epochs`` epochs
#: whatever the number of samples), and the whole budget spent.
_ADDED_PARAMETERS = {"max_steps": None, "spend_less": False}


class EarlyExitPolicy(BaseExitPolicy):
    """EENet: learned exit utility scores and a budget-constrained exit distribution.

    The method of Ilhan et al. [1]_. Per exit, a small network scores how likely that
    exit's prediction is right, from confidence measures (max probability, entropy,
    voting), the class-wise probabilities and the scores of the exits before it. The
    scorers and a per-sample distribution over exits are trained jointly (through
    skorch) under a loss that rewards expected accuracy and penalises missing the
    budget. The mean exit distribution becomes the exit quotas, tilted to meet the
    budget exactly on the fitting data, and each exit's threshold admits its quota.

    Decisions are causal: whether a sample leaves at exit ``k``, and what it
    predicts there, depend on the outputs of exits ``0..k`` only.

    Parameters
    ----------
    costs : array-like of shape (n_exits,), default=None
        Cumulative cost of running the network up to and including each exit,
        strictly increasing, any unit. Required here or in :meth:`fit`.
    budget : float, default=None
        Average cost per sample allowed, in the unit of ``costs``; at least
        ``costs[0]``. A budget at or above ``costs[-1]`` does not bind: every
        sample then leaves at the last exit. Required here or in :meth:`fit`.
    confidence : tuple of str, default=("max_prob", "entropy", "voting")
        Confidence measures the scorers read; any of ``"max_prob"``,
        ``"entropy"``, ``"voting"``, ``"margin"``.
    class_scores : bool, default=True
        Whether the scorers also read the whole probability vector of their exit.
    hidden_size : int, default=32
        Hidden units of each exit's scorer.
    temperature : float, default=0.5
        Softness of the leave decisions in the training-time exit distribution.
    utility_weight, kl_weight, budget_weight, accuracy_weight : float
        Weights of the loss terms (defaults 1.0, 0.1, 1.0, 3.0): the
        survival-weighted utility cross-entropy, the KL divergence pulling the
        exit distribution towards the normalised utilities, the relative budget
        violation, and one minus the expected accuracy.
    max_epochs : int, default=60
        Most passes over the fitting data the scorer trains for; ``max_steps`` may stop
        it sooner on large fitting sets.
    max_steps : int or None, default=6000
        Most gradient steps (mini-batches) the scorer trains for, so that fit time
        stops growing with the number of samples ``n`` once there are more than
        ``max_steps * batch_size / max_epochs`` of them (25,600 with the defaults;
        below that, the ``max_epochs`` epochs take fewer steps and nothing changes).
        Above it the scorer trains for ``max(1, max_steps // ceil(n / batch_size))``
        whole epochs, or, when one epoch has more than ``max_steps`` batches, for
        ``max_steps`` batches of one shuffled pass (a random subset of
        ``max_steps * batch_size`` samples). ``None``: always ``max_epochs`` epochs.
    lr : float, default=1e-2
        Adam learning rate.
    weight_decay : float, default=0.0
    batch_size : int, default=256
    n_restarts : int, default=1
        Independent trainings; the one with the best accuracy on the fitting data,
        under its own budget-meeting thresholds, is kept.
    spend_less : bool, default=True
        Whether the policy may spend less than the budget where that is clearly more
        accurate on the fitting data (a network whose later exits are less accurate
        than earlier ones, "overthinking" [2]_): the operating point is then the
        most accurate of several mean costs up to the budget, kept only if it beats
        spending the whole budget by a margin of standard errors (see Notes).
        ``False`` always spends the whole budget, as in the paper.
    random_state : int, RandomState instance or None, default=None
        Seeds the scorers' initialisation and batch shuffling.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where the scorer trains; ``"auto"`` uses CUDA when available. Thresholds are
        sorted with CuPy when training on CUDA and CuPy sees the GPU. The fitted
        policy always holds its scorer on the CPU.
    input_type : {"logits", "proba"}, default="logits"
        Whether ``X`` holds logits or probabilities.
    classes : array-like of shape (n_classes,), default=None
        Label of each logit column. By default the sorted distinct labels of ``y``,
        which must then cover every column.
    verbose : int, default=0
        Print skorch's epoch log when positive.

    Attributes
    ----------
    scorer_ : skorch.NeuralNet
        The trained scorer (on the CPU).
    thresholds_ : ndarray of shape (n_exits,)
        Score a sample needs to leave at each exit; the last is ``-inf``.
    exit_fractions_ : ndarray of shape (n_exits,)
        Fraction of the fitting samples (after :meth:`recalibrate`, of the samples it
        was given) leaving at each exit.
    classes_ : ndarray of shape (n_classes,)
    costs_ : ndarray of shape (n_exits,)
    budget_ : float
    target_cost_ : float
        The mean cost per sample the thresholds were set to spend on the fitting
        data, at most ``budget_``: lower when spending less is more accurate there.
        :meth:`recalibrate` spends it on new data.
    quota_log_weights_ : ndarray of shape (n_exits,)
        Log of the trained scorer's mean exit distribution over the fitting samples.
        The quotas for a mean cost ``c`` are ``softmax(quota_log_weights_ + t *
        costs_ / costs_[-1])``, ``t`` set so that their expected cost is ``c``
        (what :meth:`recalibrate` uses for a new budget).
    n_exits_ : int
    n_classes_ : int
    n_features_in_ : int
        ``n_exits_ * n_classes_``.

    Raises
    ------
    ValueError
        In :meth:`fit`: as :meth:`BaseExitPolicy.fit <eenet_sklearn.base.BaseExitPolicy.fit>`
        (missing or invalid ``costs`` and ``budget``, bad ``X`` or ``y``), and for an
        out-of-range hyperparameter (``hidden_size``, ``max_epochs``, ``max_steps``, ``batch_size``
        or ``n_restarts`` below 1, ``temperature`` or ``lr`` not positive, a negative
        weight, unknown or repeated ``confidence`` names, ``device`` not one of
        ``"auto"``, ``"cpu"``, ``"cuda"``).
    TypeError
        In :meth:`fit`: a non-numeric ``X``, ``costs`` or ``budget``, or a
        hyperparameter of the wrong type (``hidden_size=2.5``, ``spend_less="yes"``).

    See Also
    --------
    MaxProbPolicy : MSDNet's rule, the baseline EENet improves on.
    LearnedScorePolicy : Per-exit correctness classifiers, trained without the budget.
    eenet_sklearn.metrics.oracle_accuracy : The bound no policy can pass.
    eenet_sklearn.metrics.budget_curve : EENet and the baselines over several budgets.
    eenet_sklearn.nn.early_exit_predict : Early-exit inference with a fitted policy.

    Notes
    -----
    Where this implementation departs from the paper's research code (features,
    the scorer's activation, the budget-meeting tilt of the quotas) is described in
    the documentation's "Method" page.

    The budget is a ceiling, not a target. With ``spend_less=True`` the fit tries
    operating points of lower mean cost on the fitting data: 24 costs evenly spaced
    from ``costs[0]`` up to the budget (or ``costs[-1]`` if lower), and the costs of
    the exits below the budget. At each cost ``c`` the quotas are the trained mean
    exit distribution tilted to ``c`` (as at the budget) and the thresholds admit
    them within ``c``. The choice among them is guarded against fitting noise, with
    the standard error of a paired accuracy difference on the ``n`` fitting samples,
    ``sqrt(d) / n`` for ``d`` samples on which exactly one of the two is right:

    - a cheaper point is chosen only if it beats the full budget by more than ``z``
      standard errors (the best of many points would otherwise pass fitting noise
      for a gain; on small fitting sets the whole budget is kept unless the gain is
      large), the most accurate of those that do;
    - ``z = 2``, or ``z = 1`` if the network overthinks on the fitting data (some
      exit is more accurate than the last by more than 2 standard errors): spending
      more has then been shown to cost accuracy.

    Of equally accurate points the cheaper is chosen; ``target_cost_`` is its cost.
    On networks whose last exit is the most accurate the full budget is nearly
    always kept.

    References
    ----------
    .. [1] F. Ilhan, K.-H. Chow, S. Hu, T. Huang, S. Tekin, W. Wei, Y. Wu, M. Lee,
       R. Kompella, H. Latapie, G. Liu and L. Liu, "Adaptive Deep Neural Network
       Inference Optimization with EENet", arXiv:2301.07099, 2023 (first version:
       "EENet: Learning to Early Exit for Adaptive Inference").
    .. [2] Y. Kaya, S. Hong and T. Dumitras, "Shallow-Deep Networks: Understanding
       and Mitigating Network Overthinking", ICML 2019.

    Examples
    --------
    >>> from eenet_sklearn import EarlyExitPolicy
    >>> from eenet_sklearn.datasets import load_exit_logits
    >>> data = load_exit_logits("mnist_mlp3")  # 3 exits, costs in ms
    >>> X, y = data.val_logits[:2000], data.val_labels[:2000]  # held-out logits
    >>> policy = EarlyExitPolicy(costs=data.costs, budget=0.03, max_epochs=10,
    ...                          random_state=0, device="cpu").fit(X, y)
    >>> policy.predict_exit(data.test_logits[:5]).shape
    (5,)
    >>> round(policy.expected_cost(X), 3)  # the quotas spend the budget on the fitting data
    0.03
    """

    def __init__(
        self,
        costs=None,
        budget=None,
        *,
        confidence=("max_prob", "entropy", "voting"),
        class_scores=True,
        hidden_size=32,
        temperature=0.5,
        utility_weight=1.0,
        kl_weight=0.1,
        budget_weight=1.0,
        accuracy_weight=3.0,
        max_epochs=60,
        max_steps=6000,
        lr=1e-2,
        weight_decay=0.0,
        batch_size=256,
        n_restarts=1,
        spend_less=True,
        random_state=None,
        device="auto",
        input_type="logits",
        classes=None,
        verbose=0,
    ):
        self.costs = costs
        self.budget = budget
        self.confidence = confidence
        self.class_scores = class_scores
        self.hidden_size = hidden_size
        self.temperature = temperature
        self.utility_weight = utility_weight
        self.kl_weight = kl_weight
        self.budget_weight = budget_weight
        self.accuracy_weight = accuracy_weight
        self.max_epochs = max_epochs
        self.max_steps = max_steps
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.n_restarts = n_restarts
        self.spend_less = spend_less
        self.random_state = random_state
        self.device = device
        self.input_type = input_type
        self.classes = classes
        self.verbose = verbose

    # The NumPy copy of the scorer's heads that prediction reads.
    _private_fit_state = ("_heads",)

    def _check_hyperparameters(self) -> dict[str, object]:
        confidence = check_confidence(self.confidence, self.class_scores)
        for name, kind, low in (
            ("hidden_size", Integral, 1),
            ("max_epochs", Integral, 1),
            ("batch_size", Integral, 1),
            ("n_restarts", Integral, 1),
        ):
            check_scalar(getattr(self, name), name, kind, min_val=low)
        if self.max_steps is not None:
            check_scalar(self.max_steps, "max_steps", Integral, min_val=1)
        for name in ("temperature", "lr"):
            check_scalar(getattr(self, name), name, Real, min_val=0, include_boundaries="neither")
        for name in ("utility_weight", "kl_weight", "budget_weight", "accuracy_weight", "weight_decay"):
            check_scalar(getattr(self, name), name, Real, min_val=0)
        if self.device not in _DEVICES:
            raise ValueError(f"device must be one of {_DEVICES}, got {self.device!r}.")
        if not isinstance(self.spend_less, (bool, np.bool_)):
            raise TypeError(f"spend_less must be True or False, got {self.spend_less!r}.")
        return {"_confidence": confidence}

    def _train_device(self) -> str:
        if self.device == "auto":
            try:
                import torch
            except ImportError:  # a loaded policy, served without torch, sorts on the CPU
                return "cpu"
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def _use_gpu(self) -> bool:
        return self._train_device() == "cuda" and gpu_available()

    def _fit_policy(self, outputs: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features = exit_features(outputs, self.input_type, self._confidence, self.class_scores)
        target = correct.astype(np.float32)
        rng = check_random_state(self.random_state)
        # (accuracy, scorer, its NumPy heads, mean exit log-weights, scores, quotas) of the
        # best restart so far. ``self`` is fit's scratch copy (BaseExitPolicy.fit): what is
        # set on it here reaches the policy only if the whole fit succeeds.
        best: tuple[float, NeuralNet, list, np.ndarray, np.ndarray, np.ndarray] | None = None
        for _ in range(self.n_restarts):
            self.scorer_ = self._train_scorer(features, target, seed=int(rng.randint(2**31 - 1)))
            self._heads = _numpy_heads(self.scorer_.module_)
            # Thresholds are set on the scores prediction computes, bit for bit, so that a
            # fitting sample at a threshold is decided at prediction as it was in fitting.
            scores = self._chunked_exit_scores(outputs)
            # The mean exit distribution, tilted to meet the budget exactly.
            log_weights = self._mean_exit_log_weights(features)
            fractions = tilt_to_budget(log_weights, self.costs_, self.budget_)
            _, exits = quota_thresholds(
                scores,
                fractions,
                costs=self.costs_,
                budget=self.budget_,
                quotas=partial(tilt_to_budget, log_weights, self.costs_ / self.costs_[-1]),
                use_gpu=self._use_gpu(),
            )
            accuracy = correct[np.arange(len(exits)), exits].mean()
            if best is None or accuracy > best[0]:
                best = (accuracy, self.scorer_, self._heads, log_weights, scores, fractions)
        assert best is not None  # n_restarts >= 1 is checked with the other hyperparameters
        # quota_log_weights_ is kept for recalibrate(budget=...): the quotas of any cost
        # tilt these log-weights.
        _, self.scorer_, self._heads, self.quota_log_weights_, scores, fractions = best
        if self.spend_less:
            self.target_cost_, fractions = self._most_accurate_point(scores, correct, fractions)
        return scores, fractions

    def _most_accurate_point(
        self, scores: np.ndarray, correct: np.ndarray, fractions: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """The operating point (mean cost, quotas) that ``spend_less`` chooses; see Notes.

        ``fractions``: the quotas at the full budget, kept unless a cheaper point beats
        them on the fitting data by more than the margin (``_OVERTHINKING_Z`` or
        ``_SPEND_LESS_Z`` standard errors of the paired accuracy difference).
        """
        n_samples = len(scores)
        rows = np.arange(n_samples)
        use_gpu = self._use_gpu()

        def right(cost: float, quotas: np.ndarray) -> np.ndarray:
            _, exits = quota_thresholds(
                scores,
                quotas,
                costs=self.costs_,
                budget=cost,
                quotas=self._unit_quota_fractions,
                use_gpu=use_gpu,
            )
            return correct[rows, exits]

        top = min(self.budget_, float(self.costs_[-1]))
        grid = np.linspace(self.costs_[0], top, _N_CANDIDATE_COSTS + 1)[:-1]
        candidates = np.unique(np.concatenate([grid, self.costs_[self.costs_ < top]]))
        # A network that overthinks on the fitting data has shown that spending more can
        # cost accuracy: a smaller margin. Otherwise a cheaper point must beat the full
        # budget by more than the noise of picking the best of many.
        margin = _OVERTHINKING_Z if _overthinks(correct) else _SPEND_LESS_Z
        reference = right(self.budget_, fractions)
        best = (int(reference.sum()), self.budget_, fractions)
        # Cheapest first, so that of equally accurate points the cheaper is kept.
        for cost in candidates:
            quotas = self._quota_fractions(float(cost))
            here = right(float(cost), quotas)
            gain = int(here.sum()) - int(reference.sum())
            if gain > margin * np.sqrt(int((here != reference).sum())) and here.sum() > best[0]:
                best = (int(here.sum()), float(cost), quotas)
        return best[1], best[2]

    def _train_scorer(self, features: np.ndarray, target: np.ndarray, seed: int) -> NeuralNet:
        import torch
        from skorch import NeuralNet

        from ._scoring_network import EENetLoss, ExitScorer, TensorBatches

        device = self._train_device()
        epochs, batches = _training_length(
            len(features), self.batch_size, self.max_epochs, self.max_steps
        )
        net = NeuralNet(
            ExitScorer,
            EENetLoss,
            module__n_exits=self.n_exits_,
            module__n_features=n_features(self.n_classes_, self._confidence, self.class_scores),
            module__hidden_size=self.hidden_size,
            module__temperature=self.temperature,
            # The loss depends on the cost ratios only: in units of the last exit's cost,
            # costs of any scale (1e-45, 1e40) survive float32 and train alike.
            criterion__costs=torch.as_tensor(self.costs_ / self.costs_[-1], dtype=torch.float32),
            criterion__budget=self.budget_ / self.costs_[-1],
            criterion__utility_weight=self.utility_weight,
            criterion__kl_weight=self.kl_weight,
            criterion__budget_weight=self.budget_weight,
            criterion__accuracy_weight=self.accuracy_weight,
            optimizer=torch.optim.Adam,
            optimizer__weight_decay=self.weight_decay,
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            train_split=None,
            iterator_train=TensorBatches,
            iterator_train__shuffle=True,
            iterator_train__generator=torch.Generator().manual_seed(seed),
            iterator_train__max_batches=batches,
            device=device,
            verbose=self.verbose,
        )
        # skorch initialises the weights from torch's global RNG: seed it in a forked
        # state (the caller's RNG is left untouched) under a lock, so that fits running
        # in threads of one process (joblib, Dask) cannot draw from each other's seeds.
        # Only the CPU generator is seeded: the module is built on the CPU, and
        # torch.manual_seed would also reset the caller's CUDA generators.
        with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            net.initialize()
        # The scorer is tiny: on the CPU, handing its ops out to several threads costs far
        # more than it saves (benchmarks/results/speed.md), so it trains on one.
        with _one_openmp_thread() if device == "cpu" else contextlib.nullcontext():
            _train(net, torch.from_numpy(features), torch.from_numpy(target), epochs)
        # The spent shuffling generator is no part of the fitted policy (skorch's set_params
        # refuses iterator changes on an initialised net, hence the plain assignment).
        net.iterator_train__generator = None
        if device != "cpu":
            net.module_.to("cpu")
            net.set_params(device="cpu")
        # Keep what prediction needs: the module, in evaluation mode. The optimiser (and
        # its state, on the GPU after CUDA training), the criterion, the callbacks and the
        # history go.
        net.trim_for_prediction()
        return net

    def __getstate__(self) -> dict:
        # The scorer's weights are pickled once, with scorer_; the NumPy copies that
        # prediction reads are rebuilt from them on loading. A policy read by load_policy
        # has no scorer_: its heads are its only copy of the weights, and are kept.
        state = dict(super().__getstate__())
        if "scorer_" in state:
            state.pop("_heads", None)
        return state

    def __setstate__(self, state: dict) -> None:
        # A policy pickled before a parameter existed gets the value that reproduces how
        # it was fitted (a refit then trains as it did): get_params, clone, repr and
        # save_policy need every parameter.
        missing = {name: value for name, value in _ADDED_PARAMETERS.items() if name not in state}
        if missing:
            state = {**state, **missing}
        super().__setstate__(state)
        if "scorer_" in state and "_heads" not in state:
            self._heads = _numpy_heads(self.scorer_.module_)

    def _mean_exit_log_weights(self, features: np.ndarray) -> np.ndarray:
        """Log of the scorer's mean exit distribution over the samples of ``features``."""
        import torch

        with _one_openmp_thread(), torch.inference_mode():
            _, log_r = self.scorer_.module_(torch.from_numpy(features))
        mean_r = log_r.double().exp().mean(dim=0).numpy()
        with np.errstate(divide="ignore"):
            return np.log(mean_r)

    def _quota_fractions(self, cost: float) -> np.ndarray:
        return tilt_to_budget(self.quota_log_weights_, self.costs_, cost)

    def _unit_quota_fractions(self, share: float) -> np.ndarray:
        return tilt_to_budget(self.quota_log_weights_, self.costs_ / self.costs_[-1], share)

    # --- prediction: the per-exit step of ExitScorer.utility_logits, in NumPy ----------

    def _step_state_names(self) -> tuple[str, ...]:
        return ("utilities", *feature_state_names(self._confidence))

    def _step_initial_state(self, n_samples: int) -> dict[str, np.ndarray]:
        return {
            "utilities": np.zeros((n_samples, self.n_exits_), dtype=np.float64),
            **initial_feature_state(n_samples, self.n_classes_, self._confidence),
        }

    def _step_weights(self) -> list[tuple[np.ndarray, float, np.ndarray, float]]:
        # Float64 copies of _heads (the one stored form), laid out for row_product: the
        # first weight transposed to (inputs, hidden) with the bias as its last row (the
        # step's inputs end with a column of ones), the last weight as a (hidden, 1)
        # column: NumPy makes that product a matrix-vector one (BLAS gemv), which on
        # row_product's padded row blocks also sums every row alike, several times faster
        # than a matrix product with 7 columns of zeros (tests/test_predict_throughput.py).
        weights = []
        for weight, bias, slope, out_weight, out_bias in self._heads:
            first = np.vstack([np.asarray(weight, dtype=np.float64).T, np.reshape(bias, (1, -1))])
            out_column = np.asarray(out_weight, dtype=np.float64).reshape(-1, 1)
            weights.append((first, float(slope), out_column, float(np.reshape(out_bias, -1)[0])))
        return weights

    def _exit_step(self, k, log_proba, proba, state, weights):
        # Head k reads exit k's features, then the sigmoid utilities of exits < k (carried
        # in the state). NumPy rather than torch: early-exit inference scores a few rows
        # per call, where each torch op's dispatch costs more than the arithmetic. The
        # products are row_product's: each row is summed by the same BLAS kernel in the
        # same order whatever the other rows.
        weight, slope, out_weight, out_bias = weights[k]
        # [features, utilities of exits < k, 1], in row_product's zero-padded row blocks:
        # the features are written there directly.
        n_rows = proba.shape[0]
        width = weight.shape[0] - k - 1
        inputs = np.empty((padded_rows(n_rows), weight.shape[0]), dtype=np.float64)
        inputs[n_rows:] = 0.0
        _, state = step_exit_features(
            k, proba, log_proba, state, self._confidence, self.class_scores, out=inputs[:n_rows, :width]
        )
        utilities = state["utilities"]
        inputs[:n_rows, width:-1] = utilities[:, :k]
        inputs[:n_rows, -1] = 1.0
        hidden = row_product(inputs, weight)
        leaky = np.multiply(hidden, slope)
        np.maximum(hidden, leaky, out=hidden)  # LeakyReLU, 0 <= slope < 1
        utility = row_product(hidden, out_weight)[:n_rows, 0]
        utility += out_bias
        scores = expit(utility)
        state["utilities"] = utilities = utilities.copy()
        utilities[:, k] = scores
        return scores, state


def _training_length(
    n_samples: int, batch_size: int, max_epochs: int, max_steps: int | None
) -> tuple[int, int | None]:
    """Epochs, and batches per epoch (``None``: all), within ``max_epochs`` and ``max_steps``.

    Whole epochs while ``max_steps`` allows at least one; otherwise one pass over the
    first ``max_steps`` batches of a shuffled epoch. See ``EarlyExitPolicy``'s ``max_steps``.
    """
    per_epoch = -(-n_samples // batch_size)
    if max_steps is None:
        return max_epochs, None
    if per_epoch > max_steps:
        return 1, max_steps
    return min(max_epochs, max_steps // per_epoch), None


def _train(net: NeuralNet, features, target, epochs: int) -> None:
    """Train an initialised skorch net for ``epochs`` epochs, letting ``KeyboardInterrupt`` through.

    What ``NeuralNet.partial_fit`` does, except that ``partial_fit`` catches
    ``KeyboardInterrupt`` and returns a half-trained net: here Ctrl-C aborts the fit
    (and, fitting being atomic, leaves the policy as it was).
    """
    net.notify("on_train_begin", X=features, y=target)
    net.fit_loop(features, target, epochs=epochs)
    net.notify("on_train_end", X=features, y=target)


def _overthinks(correct: np.ndarray) -> bool:
    """Whether an exit is more accurate than the last by more than ``_SPEND_LESS_Z`` standard errors.

    ``correct``: ``(n_samples, n_exits)``, whether each exit's prediction is right. The
    standard error of the paired accuracy difference of exits ``k`` and ``K - 1`` is
    about ``sqrt(d) / n``, ``d`` the number of samples on which exactly one is right.
    """
    last = correct[:, -1]
    for k in range(correct.shape[1] - 1):
        gain = int(correct[:, k].sum()) - int(last.sum())
        if gain > _SPEND_LESS_Z * np.sqrt(int((correct[:, k] != last).sum())):
            return True
    return False


def _numpy_heads(scorer: ExitScorer) -> list[tuple[np.ndarray, np.ndarray, float, np.ndarray, np.ndarray]]:
    """The scorer's heads as NumPy float32 arrays: the one stored form of its weights.

    Prediction reads float64 copies of them (:meth:`EarlyExitPolicy._step_weights`).
    """
    return [
        (
            weight.numpy().copy(),
            bias.numpy()[:, None].copy(),
            float(slope),
            out_weight.numpy().copy(),
            out_bias.numpy().copy(),
        )
        for weight, bias, slope, out_weight, out_bias in scorer.head_layers()
    ]


def _one_openmp_thread() -> contextlib.AbstractContextManager:
    """Limit OpenMP (torch's intra-op pool) to one thread in this thread, for a ``with`` block."""
    return one_thread("openmp")
