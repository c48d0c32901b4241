"""The main job, end to end: train a multi-exit network, fit the policies, exit early for real."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import torch
from tqdm.auto import tqdm

from ._baselines import EntropyPolicy, FixedExitPolicy, MaxProbPolicy, PatiencePolicy
from ._eenet import EarlyExitPolicy
from .datasets import load_fashion_mnist, load_mnist, load_movie_reviews
from .metrics import oracle_accuracy

#: Data sets the demo trains on, all shipped by packages (no download).
DEMO_DATA = ("mnist", "fashion-mnist", "movie-reviews")


@dataclass
class DemoSettings:
    """What ``eenet-sklearn demo`` runs; the defaults take about 1 minute on 2 CPU cores."""

    data: str = "mnist"
    budgets: tuple[float, ...] = (0.25, 0.5, 0.75)
    epochs: int = 2
    train_size: int = 10000
    val_size: int = 5000
    test_size: int = 5000
    # Served in batches: at batch size 1, deciding after each exit (0.1-0.3 ms on a small CPU)
    # costs as much as a stage of this small CNN (benchmarks/results/early_exit_speed.md).
    batch_size: int = 256
    policy_epochs: int = 60
    output_dir: Path = Path("eenet-demo")
    quiet: bool = False


@dataclass
class _Split:
    X: object
    y: np.ndarray


def _say(settings: DemoSettings, message: str) -> None:
    if not settings.quiet:
        print(message, file=sys.stderr, flush=True)


def _image_splits(settings: DemoSettings):
    load = load_mnist if settings.data == "mnist" else load_fashion_mnist
    images, labels = load("train")
    test_images, test_labels = load("test")
    if settings.train_size + settings.val_size > len(images):
        raise ValueError(
            f"train_size + val_size must be at most {len(images)}, "
            f"got {settings.train_size} + {settings.val_size}."
        )

    def split(rows: slice, source=images, target=labels) -> _Split:
        return _Split(torch.from_numpy(source[rows, None].astype(np.float32) / 255.0), target[rows])

    # Validation rows come from the end of the training file, never seen in training.
    return (
        split(slice(0, settings.train_size)),
        split(slice(len(images) - settings.val_size, len(images))),
        split(slice(0, settings.test_size), test_images, test_labels),
    )


def _image_network(settings: DemoSettings, train: _Split):
    from .nn import MultiExitClassifier, multi_exit_cnn

    torch.manual_seed(0)
    net = MultiExitClassifier(
        multi_exit_cnn(n_classes=10, widths=(32, 64, 128, 256)),
        max_epochs=settings.epochs, lr=3e-3, train_split=None, verbose=int(not settings.quiet),
    )
    return net.fit(train.X, train.y)


def _text_splits_and_network(settings: DemoSettings):
    from .nn import MultiExitClassifier, load_encoder, multi_exit_encoder, tokenize

    model, tokenizer = load_encoder()
    texts, labels = load_movie_reviews()
    sizes = (settings.train_size, settings.val_size, settings.test_size)
    if sum(sizes) > len(texts):
        raise ValueError(
            f"train_size + val_size + test_size must be at most {len(texts)}, got {sum(sizes)}."
        )
    order = np.random.default_rng(0).permutation(len(texts))
    bounds = np.cumsum(sizes)
    splits = [
        _Split(tokenize(tokenizer, [texts[i] for i in rows], max_length=64), labels[rows])
        for rows in np.split(order[: bounds[-1]], bounds[:-1])
    ]
    torch.manual_seed(0)
    net = MultiExitClassifier(
        multi_exit_encoder(model, [2, 4, 6], n_classes=2), train_backbone=False,
        max_epochs=settings.epochs, lr=1e-3, batch_size=32, train_split=None,
        verbose=int(not settings.quiet),
    )
    return (*splits, net.fit(splits[0].X, splits[0].y))


def run_demo(settings: DemoSettings) -> str:
    """Run the demonstration; return its report (a markdown table and the measured saving)."""
    from .nn import early_exit_predict, measure_latency, time_full_network

    if settings.data not in DEMO_DATA:
        raise ValueError(f"data must be one of {DEMO_DATA}, got {settings.data!r}.")
    bad = [b for b in settings.budgets if not 0.0 <= b <= 1.0]
    if bad or not settings.budgets:
        raise ValueError(
            f"budgets must be positions in [0, 1] between the first and last exit cost, got {bad}."
        )
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    _say(settings, f"Training a multi-exit network on {settings.data} ({settings.epochs} epochs)...")
    if settings.data == "movie-reviews":
        train, val, test, net = _text_splits_and_network(settings)
    else:
        train, val, test = _image_splits(settings)
        net = _image_network(settings, train)
    val_logits, test_logits = net.transform(val.X), net.transform(test.X)
    n_exits = val_logits.shape[1]
    exit_accuracy = (test_logits.argmax(axis=2) == test.y[:, None]).mean(axis=0)

    # A test set smaller than a batch is served as one batch.
    batch_size = min(settings.batch_size, len(test.y))
    _say(settings, f"Measuring the exits' costs at batch size {batch_size}...")
    costs = measure_latency(net, test.X, batch_size=batch_size, n_repeats=50 if batch_size == 1 else 10)
    budgets = [float(costs[0] + b * (costs[-1] - costs[0])) for b in settings.budgets]
    makers = {
        "EENet": lambda budget: EarlyExitPolicy(
            costs=costs, budget=budget, max_epochs=settings.policy_epochs, random_state=0
        ),
        "MSDNet (max-prob)": lambda budget: MaxProbPolicy(costs=costs, budget=budget),
        "BranchyNet (entropy)": lambda budget: EntropyPolicy(costs=costs, budget=budget),
        "PABEE (patience)": lambda budget: PatiencePolicy(costs=costs, budget=budget),
        "fixed exit": lambda budget: FixedExitPolicy(costs=costs, budget=budget),
    }
    rows, eenets = [], []
    with tqdm(total=len(budgets) * len(makers), desc="fitting policies", disable=settings.quiet,
              file=sys.stderr) as progress:
        for budget in budgets:
            for name, make in makers.items():
                policy = make(budget).fit(val_logits, val.y)
                exits = policy.predict_exit(test_logits)
                accuracy = policy.score(test_logits, test.y)
                rows.append({"policy": name, "budget": budget, "accuracy": accuracy,
                             "mean_cost": float(costs[exits].mean())})
                if name == "EENet":
                    eenets.append(policy)
                progress.update(1)
            accuracy, exits = oracle_accuracy(test_logits, test.y, costs, budget, return_exits=True)
            rows.append({"policy": "oracle", "budget": budget, "accuracy": accuracy,
                         "mean_cost": float(costs[exits].mean())})

    _say(settings, "Running early-exit inference on the test set...")
    full_seconds = time_full_network(net, test.X, batch_size=batch_size)
    savings = []
    for budget, policy in zip(budgets, eenets, strict=True):
        result = early_exit_predict(net, policy, test.X, batch_size=batch_size)
        # Equal but for samples within rounding of a threshold: kernels may round differently
        # for the batch sizes the two runs used.
        agreement = float(np.mean(result.exits == policy.predict_exit(test_logits)))
        savings.append((budget, costs[result.exits].mean() / costs[-1], result.seconds / full_seconds,
                        float(np.mean(result.labels == test.y)), agreement))

    policy_path = settings.output_dir / "eenet_policy.joblib"
    joblib.dump(eenets[len(eenets) // 2], policy_path)
    plot_path = settings.output_dir / "budget_accuracy.png"
    _save_plot(rows, plot_path, settings.data)

    lines = [
        f"# eenet-sklearn demo: {settings.data}",
        "",
        f"{n_exits}-exit network trained on {len(train.y)} samples ({settings.epochs} epochs); "
        f"policies fitted on {len(val.y)} held-out samples, measured on {len(test.y)} test samples.",
        "Per-exit test accuracy: " + ", ".join(f"{a:.4f}" for a in exit_accuracy),
        f"Per-exit cost (ms per sample at batch size {batch_size}, measured): "
        + ", ".join(f"{c:.3f}" for c in costs),
        "",
        "| budget (ms) | policy | test accuracy | mean cost (ms) | cost / budget |",
        "|---|---|---|---|---|",
        *(f"| {r['budget']:.3f} | {r['policy']} | {r['accuracy']:.4f} | {r['mean_cost']:.3f} "
          f"| {r['mean_cost'] / r['budget']:.3f} |" for r in rows),
        "",
        f"Early-exit inference with EENet, test set, batch size {batch_size} "
        f"(full network: {1000 * full_seconds / len(test.y):.3f} ms per sample):",
        "",
        "| budget (ms) | expected cost / full | measured time / full | accuracy | exit as predict_exit |",
        "|---|---|---|---|---|",
        *(f"| {b:.3f} | {e:.3f} | {m:.3f} | {a:.4f} | {g:.2%} |" for b, e, m, a, g in savings),
        "",
        f"Saved: {plot_path}, {policy_path} (EENet at {budgets[len(budgets) // 2]:.3f} ms). "
        f"Took {time.perf_counter() - started:.0f} s.",
    ]
    report = "\n".join(lines)
    (settings.output_dir / "results.md").write_text(report + "\n")
    return report


def _save_plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    from .plotting import BudgetCurveDisplay

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    BudgetCurveDisplay.from_predictions(rows, ax=ax, x="mean_cost")
    ax.set_title(f"{title}: test accuracy against mean cost")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
