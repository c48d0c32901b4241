"""Speed of ``predict_exit`` and of ``EarlyExitPolicy.fit`` on synthetic per-exit logits.

Measures, as medians (with min and max) of ``--repeats`` runs (default 3):

- ``predict_exit`` throughput (samples/s) of ``EarlyExitPolicy`` and, as a reference,
  ``MaxProbPolicy`` at N = 10^4, 10^5, 10^6 for (K=4 exits, C=10 classes) and
  (K=6, C=100), with the ratio EENet / MaxProb;
- the wall time of ``EarlyExitPolicy(...).fit`` with default parameters at
  N = 10^3 .. 10^6 (K=4, C=10), side by side with the epoch-only training of earlier
  versions (``max_steps=None``: 60 epochs whatever N) as the reference, where the time
  allows (``--fit-budget``);
- the accuracy that the default step budget (``max_steps``) costs or not: the default
  against ``max_steps=None`` on the shipped sets fashion_cnn4, mnist_mlp3 and
  reviews_minilm6 (fit on val, score on test, 5 budgets, 3 seeds), and on fashion_cnn4's
  val logits tiled 10 times with noise (10^5 samples, where the step budget binds).

Logits come from :func:`eenet_sklearn.datasets.make_exit_logits`. The targets (on a
2-core CPU): ``predict_exit`` >= 1e6 samples/s at K=4, C=10, N=10^6, and a default fit
at N=10^6 under 60 s with no loss of accuracy at 10^4 samples (issue 13, item 4).

    python benchmarks/speed.py            # ~30-40 min on 2 busy cores; writes results/speed.{md,json}
    python benchmarks/speed.py --quick    # tiny sizes, seconds; writes speed_quick.{md,json}
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _provenance import Provenance
from tqdm import tqdm

from eenet_sklearn._registry import make_policy
from eenet_sklearn.datasets import load_exit_logits, make_exit_logits
from eenet_sklearn.metrics import budget_at_position

RESULTS = Path(__file__).parent / "results"

# The policies whose prediction is timed are fitted on ``predictor_samples`` samples with
# ``predictor_epochs`` epochs: prediction does the same work whatever the training.
FULL = {
    "predict_shapes": [(4, 10), (6, 100)],
    "predict_sizes": [10**4, 10**5, 10**6],
    "predictor_samples": 5000,
    "predictor_epochs": 3,
    "fit_sizes": [10**3, 10**4, 10**5, 10**6],
    "fit_params": {},
    "accuracy_sets": {"fashion_cnn4": None, "mnist_mlp3": None, "reviews_minilm6": None},
    "accuracy_seeds": [0, 1, 2],
    "accuracy_budgets": 5,
    "tiled": {"set": "fashion_cnn4", "copies": 10, "noise": 0.5, "seeds": [0]},
}
QUICK = {
    "predict_shapes": [(4, 10), (6, 100)],
    "predict_sizes": [10**3, 10**4],
    "predictor_samples": 500,
    "predictor_epochs": 1,
    "fit_sizes": [500],
    "fit_params": {"max_epochs": 2},
    "accuracy_sets": {"mnist_mlp3": 500},
    "accuracy_seeds": [0],
    "accuracy_budgets": 2,
    "tiled": {"set": "mnist_mlp3", "copies": 2, "noise": 0.5, "seeds": [0], "rows": 300},
}
#: make_exit_logits works in float64; generating large sets in blocks bounds memory.
GENERATION_BLOCK = 100_000
TARGET_THROUGHPUT = 1e6  # samples/s, K=4, C=10, N=10^6
TARGET_FIT_SECONDS = 60.0  # default fit, N=10^6
#: The fits compared: the defaults, and the epoch-only training of earlier versions.
FIT_CONFIGS = {"default": {}, "max_steps=None": {"max_steps": None}}


def costs_and_budget(n_exits: int) -> tuple[np.ndarray, float]:
    """Cumulative costs 1..K and a budget 40% of the way from the first to the last."""
    costs = np.arange(1.0, n_exits + 1.0)
    return costs, budget_at_position(costs, 0.4)


def synthetic_set(n_samples: int, n_exits: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``make_exit_logits`` for ``n_samples``, generated in blocks (block ``i`` seeded ``seed + i``)."""
    logits = np.empty((n_samples, n_exits, n_classes), dtype=np.float32)
    labels = np.empty(n_samples, dtype=np.int64)
    for i, start in enumerate(range(0, n_samples, GENERATION_BLOCK)):
        stop = min(start + GENERATION_BLOCK, n_samples)
        logits[start:stop], labels[start:stop] = make_exit_logits(
            stop - start, n_exits, n_classes, random_state=seed + i
        )
    return logits, labels


def synthetic_logits(n_samples: int, n_exits: int, n_classes: int, seed: int) -> np.ndarray:
    """The logits of :func:`synthetic_set`."""
    return synthetic_set(n_samples, n_exits, n_classes, seed)[0]


def timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def summary(values: list[float]) -> dict:
    return {
        "median": float(np.median(values)),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
        "runs": [float(v) for v in values],
    }


def bench_predict(config: dict, repeats: int, seed: int, progress: tqdm) -> list[dict]:
    rows = []
    for n_exits, n_classes in config["predict_shapes"]:
        costs, budget = costs_and_budget(n_exits)
        fit_X, fit_y = make_exit_logits(
            config["predictor_samples"], n_exits, n_classes, random_state=seed + 10**6
        )
        classes = np.arange(n_classes)  # a small fitting set may miss a class
        policies = {
            "EENet": make_policy(
                "eenet", costs, budget, max_epochs=config["predictor_epochs"], random_state=0, classes=classes
            ).fit(fit_X, fit_y),
            "MaxProb": make_policy("maxprob", costs, budget, classes=classes).fit(fit_X, fit_y),
        }
        X = synthetic_logits(max(config["predict_sizes"]), n_exits, n_classes, seed)
        for policy in policies.values():
            policy.predict_exit(X[:1000])  # warm-up, not timed
        for n_samples in config["predict_sizes"]:
            row = {"n_exits": n_exits, "n_classes": n_classes, "n_samples": n_samples}
            for name, policy in policies.items():
                progress.set_postfix_str(f"predict {name} K={n_exits} C={n_classes} N={n_samples:.0e}")
                seconds = []
                for _ in range(repeats):
                    seconds.append(timed(policy.predict_exit, X[:n_samples]))
                    progress.update()
                row[name] = {
                    "seconds": summary(seconds),
                    "samples_per_s": summary([n_samples / s for s in seconds]),
                }
            row["ratio"] = row["EENet"]["samples_per_s"]["median"] / row["MaxProb"]["samples_per_s"]["median"]
            rows.append(row)
        del X
    return rows


def bench_fit(config: dict, repeats: int, seed: int, budget_s: float, progress: tqdm) -> list[dict]:
    """Fit times per size and :data:`FIT_CONFIGS` entry; runs projected past ``budget_s`` are skipped.

    A run is projected to take as long as the slowest run of the same size and
    configuration so far, or (the first) as long per sample as the slowest run of that
    configuration at the previous size: the epoch-only reference, linear in N, is
    skipped at the sizes it would take too long for. The defaults are always measured.
    On the CPU the library trains the scorer on one OpenMP thread itself.
    """
    rows = []
    costs, budget = costs_and_budget(4)
    spent, per_sample = 0.0, {}
    for n_samples in config["fit_sizes"]:
        X, y = synthetic_set(n_samples, 4, 10, seed)
        for name, extra in FIT_CONFIGS.items():
            params = {**config["fit_params"], **extra}
            seconds, skipped = [], None
            for _ in range(repeats):
                projected = max(seconds) if seconds else per_sample.get(name, 0.0) * n_samples
                # The defaults are always measured; the linear reference only within budget_s.
                if extra and spent + projected > budget_s:
                    skipped = (
                        f"{repeats - len(seconds)} run(s) skipped: ~{projected:.0f} s each projected, "
                        "past --fit-budget"
                    )
                    progress.update(repeats - len(seconds))
                    break
                progress.set_postfix_str(f"fit N={n_samples:.0e} ({name}) run {len(seconds) + 1}")
                policy = make_policy("eenet", costs, budget, random_state=0, **params)
                seconds.append(timed(policy.fit, X, y))
                spent += seconds[-1]
                progress.update()
            if seconds:
                per_sample[name] = max(seconds) / n_samples
            rows.append(
                {
                    "n_exits": 4,
                    "n_classes": 10,
                    "n_samples": n_samples,
                    "config": name,
                    "params": params or "defaults",
                    "seconds": summary(seconds) if seconds else None,
                    "note": skipped,
                }
            )
        del X, y
    return rows


def tiled_set(name: str, copies: int, noise: float, seed: int, rows: int | None = None) -> tuple:
    """A shipped set's val logits (first ``rows``) repeated ``copies`` times, plus Gaussian noise.

    The noise (standard deviation ``noise`` logits, independent per copy and entry) keeps
    the copies distinct; labels repeat. Returns (X, y, test X, test y, costs).
    """
    data = load_exit_logits(name)
    X, y = data.val_logits[:rows], data.val_labels[:rows]
    rng = np.random.default_rng(seed)
    tiled = np.concatenate([X + rng.normal(0.0, noise, X.shape).astype(np.float32) for _ in range(copies)])
    return tiled, np.tile(y, copies), data.test_logits, data.test_labels, data.costs.astype(np.float64)


def compare_accuracy(
    name: str, X, y, X_test, y_test, costs, positions, seeds: list[int], params: dict, progress: tqdm
) -> list[dict]:
    """Test accuracy and fit time of each :data:`FIT_CONFIGS` entry at each budget and seed."""
    rows = []
    for position in positions:
        budget = float(budget_at_position(costs, position))
        for seed in seeds:
            row = {"data": name, "n_fit": len(X), "position": position, "budget": budget, "seed": seed}
            thresholds = []
            for config, extra in FIT_CONFIGS.items():
                progress.set_postfix_str(f"accuracy {name} N={len(X)} {config} b={position:.2f} s={seed}")
                policy = make_policy("eenet", costs, budget, random_state=seed, **params, **extra)
                fit_s = timed(policy.fit, X, y)
                row[config] = {
                    "accuracy": float(policy.score(X_test, y_test)),
                    "cost": float(policy.expected_cost(X_test)),
                    "fit_s": fit_s,
                }
                thresholds.append(policy.thresholds_)
                progress.update()
            row["identical_thresholds"] = bool(np.array_equal(*thresholds))
            rows.append(row)
    return rows


def bench_accuracy(config: dict, progress: tqdm) -> list[dict]:
    """The default step budget against epoch-only training, on the shipped sets and a tiled one."""
    positions = [(i + 1) / (config["accuracy_budgets"] + 1) for i in range(config["accuracy_budgets"])]
    params = config["fit_params"]
    rows = []
    for name, n_rows in config["accuracy_sets"].items():
        data = load_exit_logits(name)
        rows += compare_accuracy(
            name, data.val_logits[:n_rows], data.val_labels[:n_rows], data.test_logits, data.test_labels,
            data.costs.astype(np.float64), positions, config["accuracy_seeds"], params, progress,
        )
    tiled = config["tiled"]
    X, y, X_test, y_test, costs = tiled_set(
        tiled["set"], tiled["copies"], tiled["noise"], 0, tiled.get("rows")
    )
    label = f"{tiled['set']} x{tiled['copies']} + noise"
    rows += compare_accuracy(label, X, y, X_test, y_test, costs, positions, tiled["seeds"], params, progress)
    return rows


def fmt_rate(value: float) -> str:
    """``1.23e6`` style."""
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def fmt_size(n: int) -> str:
    """``10^5`` for powers of ten, else the number."""
    exponent = round(np.log10(n))
    return f"10^{exponent}" if 10**exponent == n else str(n)


def accuracy_lines(rows: list[dict]) -> list[str]:
    """The step-budget accuracy table: one line per data set and budget, means over seeds."""
    lines = [
        "| data | N fit | budget position | seeds | accuracy, default (%) | accuracy, max_steps=None (%) "
        "| difference (points) | identical thresholds | fit s, default | fit s, max_steps=None |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["data"], row["n_fit"], row["position"]), []).append(row)
    differences = []
    for (name, n_fit, position), group in groups.items():
        default = np.mean([r["default"]["accuracy"] for r in group])
        reference = np.mean([r["max_steps=None"]["accuracy"] for r in group])
        differences.append(100 * (default - reference))
        same = sum(r["identical_thresholds"] for r in group)
        seconds = [float(np.median([r[c]["fit_s"] for r in group])) for c in FIT_CONFIGS]
        lines.append(
            f"| {name} | {n_fit} | {position:.2f} | {len(group)} | {100 * default:.2f} "
            f"| {100 * reference:.2f} | {100 * (default - reference):+.2f} | {same}/{len(group)} "
            f"| {seconds[0]:.1f} | {seconds[1]:.1f} |"
        )
    if differences:
        lines += [
            "",
            f"Default minus epoch-only accuracy over these {len(differences)} lines: mean "
            f"{np.mean(differences):+.2f} points, lowest {min(differences):+.2f}, "
            f"highest {max(differences):+.2f}.",
        ]
    return lines


def markdown(
    provenance: Provenance,
    info: dict,
    predict: list[dict],
    fit: list[dict],
    accuracy: list[dict],
    quick: bool,
) -> str:
    lines = [
        "# Speed: `predict_exit` throughput and `EarlyExitPolicy` fit time",
        "",
        *provenance.lines(),
        "",
        f"Synthetic logits from `make_exit_logits` (float32). Each entry: median of {info['repeats']} "
        "runs, [min, max] in brackets. Costs 1..K, budget 40% of the way from the first exit's "
        f"cost to the last's. The timed `EarlyExitPolicy` was fitted on {info['predictor_samples']} "
        f"samples with `max_epochs={info['predictor_epochs']}` (prediction does the same work "
        "whatever the training); `predict_exit` includes input validation. `EarlyExitPolicy` "
        "evaluates its scorer in NumPy (its matrix products go to OpenBLAS); the rest of the "
        "NumPy work is single-threaded.",
    ]
    if quick:
        lines += ["", "**Quick mode: tiny sizes, fit with `max_epochs=2`; not the issue's benchmark.**"]
    lines += [
        "",
        "## `predict_exit` throughput (samples/s)",
        "",
        "| K | C | N | EENet | MaxProb | EENet / MaxProb |",
        "|---|---|---|---|---|---|",
    ]
    for row in predict:
        cells = []
        for name in ("EENet", "MaxProb"):
            rate = row[name]["samples_per_s"]
            cells.append(f"{fmt_rate(rate['median'])} [{fmt_rate(rate['min'])}, {fmt_rate(rate['max'])}]")
        lines.append(
            f"| {row['n_exits']} | {row['n_classes']} | {fmt_size(row['n_samples'])} "
            f"| {cells[0]} | {cells[1]} | {row['ratio']:.2f} |"
        )
    lines += [
        "",
        "## `EarlyExitPolicy.fit` wall time (s)",
        "",
        "On the CPU the library trains the scorer on one OpenMP thread: it is too small to gain from "
        "more (with torch's default 2 threads, fits at N=10^4 took 25.9-116.9 s on a loaded "
        "machine, against about 5 s on one). The default trains for at most `max_steps=6000` "
        "gradient steps (and `max_epochs=60` epochs): training time stops growing with N once N "
        "passes 25,600 samples (what still grows is the NumPy work on every sample: features, "
        "scores, thresholds). `max_steps=None` is the reference measured in the same run: "
        "60 epochs whatever N, as earlier versions trained; its runs are skipped where "
        "projected past `--fit-budget` (the default's runs are always measured). Timings on a "
        "2-CPU machine shared with other sessions (see the load average above).",
        "",
        "| K | C | N | parameters | runs | median [min, max] | s per 10^5 samples | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in fit:
        params = row["params"]
        if not isinstance(params, str):
            params = ", ".join(f"{key}={value}" for key, value in params.items())
        if row["seconds"]:
            timing = row["seconds"]
            cell = f"{timing['median']:.1f} [{timing['min']:.1f}, {timing['max']:.1f}]"
            runs = len(timing["runs"])
        else:
            cell, runs = "not measured", 0
        per = f"{1e5 * row['seconds']['median'] / row['n_samples']:.1f}" if row["seconds"] else ""
        lines.append(
            f"| {row['n_exits']} | {row['n_classes']} | {fmt_size(row['n_samples'])} | {params} "
            f"| {runs} | {cell} | {per} | {row['note'] or ''} |"
        )
    lines += [
        "",
        "## Accuracy of the step budget: default against `max_steps=None`",
        "",
        "`EarlyExitPolicy` with the defaults against `max_steps=None` (epoch-only training, the "
        "earlier default), fitted on each set's val logits and scored on its test logits, at "
        "budgets evenly spaced between the first and the last exit's cost (positions), one fit "
        "per seed (`random_state`). Below 25,600 fitting samples the step budget does not bind "
        "(60 epochs take fewer steps), so the two fits are the same, bit for bit; the last "
        "set, a shipped set's val logits tiled with Gaussian noise (standard deviation 0.5), is "
        "where it binds.",
        "",
        *accuracy_lines(accuracy),
    ]
    if not quick:
        lines += ["", "## Targets", ""]
        target = next(
            (r for r in predict if (r["n_exits"], r["n_classes"], r["n_samples"]) == (4, 10, 10**6)), None
        )
        if target:
            rate = target["EENet"]["samples_per_s"]["median"]
            verdict = "met" if rate >= TARGET_THROUGHPUT else "NOT met"
            lines.append(
                f"- `predict_exit` >= {TARGET_THROUGHPUT:.0e} samples/s at K=4, C=10, N=10^6: "
                f"{fmt_rate(rate)} samples/s, {verdict}."
            )
        for n_samples in (10**4, 10**6):
            found = next((r for r in fit if r["n_samples"] == n_samples and r["config"] == "default"), None)
            if found is None:
                continue
            goal = f"- default fit at N={fmt_size(n_samples)} under {TARGET_FIT_SECONDS:.0f} s"
            if found["seconds"]:
                seconds = found["seconds"]["median"]
                verdict = "met" if seconds < TARGET_FIT_SECONDS else "NOT met"
                lines.append(f"{goal}: {seconds:.1f} s, {verdict}.")
            else:
                lines.append(f"{goal}: not measured.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds); writes speed_quick.md")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--out", type=Path, help="markdown output (a .json with raw timings goes beside it)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic logits")
    parser.add_argument(
        "--fit-budget",
        type=float,
        default=720.0,
        help="seconds all fit runs may take together; runs projected past it are skipped (default 720)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    config = QUICK if args.quick else FULL
    out = args.out or RESULTS / ("speed_quick.md" if args.quick else "speed.md")
    provenance = Provenance.start("benchmarks/speed.py", argv)
    info = {
        "repeats": args.repeats,
        "predictor_samples": config["predictor_samples"],
        "predictor_epochs": config["predictor_epochs"],
    }
    n_steps = (
        len(config["predict_shapes"]) * len(config["predict_sizes"]) * 2
        + len(config["fit_sizes"]) * len(FIT_CONFIGS)
    ) * args.repeats + len(FIT_CONFIGS) * config["accuracy_budgets"] * (
        len(config["accuracy_sets"]) * len(config["accuracy_seeds"]) + len(config["tiled"]["seeds"])
    )
    with tqdm(total=n_steps, desc="speed", unit="run", disable=args.quiet) as progress:
        predict = bench_predict(config, args.repeats, args.seed, progress)
        fit = bench_fit(config, args.repeats, args.seed, args.fit_budget, progress)
        accuracy = bench_accuracy(config, progress)
    provenance.finish()

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(provenance, info, predict, fit, accuracy, args.quick))
    raw = {
        "provenance": provenance.as_dict(),
        "settings": info,
        "predict_exit": predict,
        "fit": fit,
        "fit_accuracy": accuracy,
    }
    out.with_suffix(".json").write_text(json.dumps(raw, indent=2, default=str) + "\n")
    if not args.quiet:
        print(out.read_text())
        print(f"Wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
