"""``EarlyExitPolicy``: the EENet budgeted exit policy as a scikit-learn classifier."""

from __future__ import annotations

import contextlib
import functools
import threading
from numbers import Integral, Real
from typing import TYPE_CHECKING

import numpy as np
import threadpoolctl
from scipy.special import expit
from sklearn.utils import check_random_state, check_scalar

from ._features import check_confidence, exit_features, n_features
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
        out-of-range hyperparameter (``hidden_size``, ``max_epochs``, ``batch_size``
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

    # Scores are the scorer's probabilities that the exit is right.
    _score_scale = "logit"

    def _check_hyperparameters(self) -> dict[str, object]:
        confidence = check_confidence(self.confidence, self.class_scores)
        for name, kind, low in (
            ("hidden_size", Integral, 1),
            ("max_epochs", Integral, 1),
            ("batch_size", Integral, 1),
            ("n_restarts", Integral, 1),
        ):
            check_scalar(getattr(self, name), name, kind, min_val=low)
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
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def _use_gpu(self) -> bool:
        return self._train_device() == "cuda" and gpu_available()

    def _fit_policy(self, proba: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features = exit_features(proba, self._confidence, self.class_scores)
        target = correct.astype(np.float32)
        rng = check_random_state(self.random_state)
        # (accuracy, scorer, its NumPy heads, scores, fractions) of the best restart so far.
        best: tuple[float, NeuralNet, list, np.ndarray, np.ndarray] | None = None
        for _ in range(self.n_restarts):
            self.scorer_ = self._train_scorer(features, target, seed=int(rng.randint(2**31 - 1)))
            self._heads = _numpy_heads(self.scorer_.module_)
            # Thresholds are set on the scores prediction computes, bit for bit, so that a
            # fitting sample at a threshold is decided at prediction as it was in fitting.
            scores = self._chunked_exit_scores(proba)
            fractions = self._budget_quotas(features)
            _, exits = quota_thresholds(scores, fractions, costs=self.costs_, budget=self.budget_)
            accuracy = correct[np.arange(len(exits)), exits].mean()
            if best is None or accuracy > best[0]:
                best = (accuracy, self.scorer_, self._heads, scores, fractions)
        assert best is not None  # n_restarts >= 1 is checked with the other hyperparameters
        _, self.scorer_, self._heads, scores, fractions = best
        # Kept for recalibrate(budget=...): the quotas of any cost tilt these log-weights.
        self.quota_log_weights_ = self._mean_exit_log_weights(features)
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
            _, exits = quota_thresholds(scores, quotas, costs=self.costs_, budget=cost, use_gpu=use_gpu)
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
            net.partial_fit(torch.from_numpy(features), torch.from_numpy(target))
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
        # prediction reads are rebuilt from them on loading.
        state = dict(super().__getstate__())
        state.pop("_heads", None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "scorer_" in state and "_heads" not in state:
            self._heads = _numpy_heads(self.scorer_.module_)

    def _budget_quotas(self, features: np.ndarray) -> np.ndarray:
        """Mean exit distribution of the fitting samples, tilted to meet the budget exactly."""
        return tilt_to_budget(self._mean_exit_log_weights(features), self.costs_, self.budget_)

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

    def _exit_scores(self, log_proba: np.ndarray) -> np.ndarray:
        # ExitScorer.utility_logits in NumPy, laid out for speed: the input of head k (exit
        # k's features, then the sigmoid of the utility logits of exits < k) is one
        # contiguous (inputs, samples) block, so that each layer of each head is a single
        # GEMM. NumPy rather than torch: early-exit inference scores a few rows per call,
        # where each torch op's dispatch costs more than the arithmetic.
        n_samples, n_exits = log_proba.shape[:2]
        width = n_features(log_proba.shape[-1], self._confidence, self.class_scores)
        inputs = np.empty((n_exits, width + n_exits - 1, n_samples), dtype=np.float32)
        exit_features(
            log_proba, self._confidence, self.class_scores, out=inputs[:, :width].transpose(2, 0, 1)
        )
        utility = np.empty((n_exits, n_samples), dtype=np.float32)
        for k, (weight, bias, slope, out_weight, out_bias) in enumerate(self._heads[:n_exits]):
            hidden = weight @ inputs[k, : width + k]
            hidden += bias
            np.maximum(hidden, hidden * slope, out=hidden)  # LeakyReLU, 0 <= slope < 1
            np.matmul(out_weight, hidden, out=utility[k : k + 1])
            utility[k] += out_bias
            if k + 1 < n_exits:
                inputs[k + 1 :, width + k] = expit(utility[k])
        return expit(utility.T.astype(np.float64))


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
    """The scorer's heads as NumPy arrays, for :meth:`EarlyExitPolicy._exit_scores`."""
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


@functools.lru_cache(maxsize=1)
def _threadpools() -> threadpoolctl.ThreadpoolController:
    return threadpoolctl.ThreadpoolController()


def _one_openmp_thread() -> contextlib.AbstractContextManager:
    """Limit OpenMP (torch's intra-op pool) to one thread in this thread, for a ``with`` block."""
    return _threadpools().limit(limits=1, user_api="openmp")
