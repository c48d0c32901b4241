"""Networks with many exits (issue 13, item 2): fit time, accuracy and budget kept at K = 4, 8, 12, 16.

The sets are CNNs on Fashion-MNIST with an exit after every block: ``fashion_cnn4`` (4
exits) and ``fashion_cnn8``, ``fashion_cnn12``, ``fashion_cnn16``
(``benchmarks/make_deep_cnn_logits.py``). Every policy is fitted on the first
``--fit-rows`` rows of ``val`` (2,000) and scored on the first ``--test-rows`` rows of
``test`` (4,000: all of a deep set); the deep sets' rows are the first rows of
``fashion_cnn4``'s splits, so every K sees the same images. Costs are the sets'
``costs_ms``; budgets sit at positions k / 11, k = 1..10, between the first and the last
exit's cost (:func:`eenet_sklearn.metrics.budget_at_position`).

- ``timing``: ``EarlyExitPolicy`` with its default parameters (``device="cpu"``, one
  torch thread) fitted on the same val rows of every set at position 5/11, ``--repeats``
  times (seeds 0, 1, 2), the sets interleaved in one process after an untimed warm-up
  fit; median CPU seconds (``time.process_time``, independent of the machine's load) and
  wall seconds, and their ratios to K = 4.
- ``curves``: at each budget, EENet (``random_state=0``, defaults) and the five
  baselines of :mod:`eenet_sklearn._registry` fitted on val, scored on test: accuracy,
  test cost / budget (the budget kept), and the oracle bound
  (:func:`eenet_sklearn.metrics.oracle_accuracy` on test); the share of the gap between
  the best baseline and the oracle that EENet closes.

Writes ``benchmarks/results/many_exits.{md,csv,png}``. ``--cache DIR`` keeps every fit's
result (one JSON file per fit, keyed by its settings), so the parts can run in separate
processes at the same time (``--part timing``, ``--part curves --sets ...``) and a last
run of the plain command reads them all back and writes the tables.

    python benchmarks/many_exits.py                    # ~55 EENet fits: ~20 min on 2 busy cores
    python benchmarks/many_exits.py --part curves --sets fashion_cnn16 --cache /tmp/fits &
    python benchmarks/many_exits.py --part timing --cache /tmp/fits   # then the plain command
    python benchmarks/many_exits.py --quick            # a minute; writes many_exits_quick.*
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _provenance import Provenance
from joblib import Parallel, delayed
from tqdm import tqdm

from eenet_sklearn._registry import POLICIES, make_policy
from eenet_sklearn.datasets import load_exit_logits
from eenet_sklearn.metrics import budget_at_position, oracle_accuracy

RESULTS = Path(__file__).parent / "results"
SETS = ("fashion_cnn4", "fashion_cnn8", "fashion_cnn12", "fashion_cnn16")
POSITIONS = tuple(k / 11 for k in range(1, 11))
TIMING_POSITION = 5 / 11
BASELINES = tuple(name for name in POLICIES if name != "eenet")


def load(name: str, fit_rows: int, test_rows: int) -> dict:
    """The set's first ``fit_rows`` val rows, first ``test_rows`` test rows, ``costs_ms`` and exit count."""
    data = load_exit_logits(name)
    return {
        "val": (data.val_logits[:fit_rows], data.val_labels[:fit_rows]),
        "test": (data.test_logits[:test_rows], data.test_labels[:test_rows]),
        "costs": data.costs,
        "K": data.val_logits.shape[1],
    }


def eenet_params(config: dict) -> dict:
    return {"device": "cpu", **config["eenet_params"]}


def fit_one(name: str, policy: str, position: float, seed: int, config: dict) -> dict:
    """Fit one policy on val and measure it on test (runs in a joblib worker)."""
    torch.set_num_threads(1)
    data = load(name, config["fit_rows"], config["test_rows"])
    budget = float(budget_at_position(data["costs"], position))
    params = eenet_params(config) | {"random_state": seed} if policy == "eenet" else {}
    estimator = make_policy(policy, data["costs"], budget, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-set and spend-less notes: the cost ratio says it
        start, start_cpu = time.perf_counter(), time.process_time()
        estimator.fit(*data["val"])
        fit_s, cpu_s = time.perf_counter() - start, time.process_time() - start_cpu
    X_test, y_test = data["test"]
    cost = float(estimator.expected_cost(X_test))
    return {
        "data": name, "K": data["K"], "policy": policy, "position": position, "seed": seed, "budget": budget,
        "accuracy": float(estimator.score(X_test, y_test)), "cost_ratio": cost / budget, "fit_s": fit_s,
        "cpu_s": cpu_s,
    }


def cached_fit(part: str, name: str, policy: str, position: float, seed: int, config: dict,
               cache: Path | None) -> dict | None:
    """:func:`fit_one`, its result kept in ``cache`` (one JSON file per fit) and read back when there."""
    what = {"part": part, "name": name, "policy": policy, "position": round(position, 9), "seed": seed,
            **{key: config[key] for key in ("fit_rows", "test_rows", "eenet_params")}}
    key = hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]
    path = None if cache is None else cache / f"{part}_{name}_{policy}_{key}.json"
    if path is not None and path.exists():
        return {**json.loads(path.read_text()), "cached": True}
    if config.get("cached_only"):
        return None
    row = {**fit_one(name, policy, position, seed, config), "part": part}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(row))
    return {**row, "cached": False}


def oracle_one(name: str, position: float, config: dict) -> dict:
    data = load(name, 0, config["test_rows"])
    budget = float(budget_at_position(data["costs"], position))
    accuracy, exits = oracle_accuracy(*data["test"], data["costs"], budget, return_exits=True)
    return {
        "part": "curves", "data": name, "K": data["K"], "policy": "oracle", "position": position, "seed": 0,
        "budget": budget, "accuracy": float(accuracy),
        "cost_ratio": float(data["costs"][exits].mean()) / budget, "fit_s": 0.0, "cached": False,
    }


def run_curves(sets: list[str], config: dict, cache: Path | None, n_jobs: int, quiet: bool) -> list[dict]:
    """Every policy at every budget on every set (EENet fits first), in ``n_jobs`` processes."""
    jobs = [("curves", name, policy, position, 0, config, cache) for policy in ("eenet", *BASELINES)
            for name in sets for position in config["positions"]]
    rows = list(tqdm(
        Parallel(n_jobs=n_jobs, return_as="generator")(delayed(cached_fit)(*job) for job in jobs),
        total=len(jobs), desc="curves", disable=quiet,
    ))
    rows = [row for row in rows if row is not None]
    return rows + [oracle_one(name, position, config) for name in sets for position in config["positions"]]


def run_timing(sets: list[str], config: dict, cache: Path | None, quiet: bool) -> list[dict]:
    """Fit times, the sets interleaved within each repeat (in this process, one torch thread)."""
    jobs = [(name, seed) for seed in range(config["repeats"]) for name in sets]
    if not config.get("cached_only"):
        # An untimed fit first: the first fit in a process imports torch and skorch.
        fit_one(sets[0], "eenet", TIMING_POSITION, 0, config | {"eenet_params": {"max_epochs": 1}})
    rows = [cached_fit("timing-cpu", name, "eenet", TIMING_POSITION, seed, config, cache)
            for name, seed in tqdm(jobs, desc="timing", disable=quiet)]
    return [row for row in rows if row is not None]


def fit_time_table(timing: list[dict], summary: dict) -> list[str]:
    """The fit-time table; adds each set's medians and their ratios to the first set's to ``summary``."""
    sets = list(dict.fromkeys(row["data"] for row in timing))
    medians = {name: {key: float(np.median([r[key] for r in timing if r["data"] == name]))
                      for key in ("fit_s", "cpu_s")} for name in sets}
    reference = medians[sets[0]]
    lines = [
        "## Fit time (EarlyExitPolicy, defaults)",
        "",
        "Fits on the same val rows for every K at position 5/11 (seeds 0, 1, 2), the sets interleaved within "
        "each repeat in one process after an untimed warm-up fit. CPU seconds (`time.process_time`, torch on "
        "one thread) measure the work whatever the machine's load; wall seconds depend on it. Ratios of the "
        f"medians to {sets[0]} (K = {summary[sets[0]]['K']}).",
        "",
        "| set | K | fits | CPU s (median) | [min, max] | CPU ratio to the first | wall s (median) "
        "| [min, max] | wall ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in sets:
        rows = [r for r in timing if r["data"] == name]
        cells = [name, str(summary[name]["K"]), str(len(rows))]
        for key in ("cpu_s", "fit_s"):
            values = [r[key] for r in rows]
            ratio = medians[name][key] / reference[key]
            cells += [f"{medians[name][key]:.1f}", f"[{min(values):.1f}, {max(values):.1f}]", f"{ratio:.2f}"]
            summary[name] |= {key: medians[name][key], f"{key}_ratio": ratio}
        lines.append("| " + " | ".join(cells) + " |")
    last = sets[-1]
    if len(sets) > 1:
        met = max(summary[last]["cpu_s_ratio"], summary[last]["fit_s_ratio"]) <= 3.0
        lines += ["", f"Issue 13 asks for the fit time at the most exits ({last}, K = {summary[last]['K']}) "
                  f"to be at most 3x the time at {sets[0]} for the same samples: CPU ratio "
                  f"{summary[last]['cpu_s_ratio']:.2f}, wall ratio {summary[last]['fit_s_ratio']:.2f}, "
                  + ("met." if met else "**not met**.")]
    return [*lines, ""]


def summarise(timing: list[dict], curves: list[dict], sets: list[str]) -> tuple[list[str], dict]:
    """Markdown tables and the per-set summary figures."""
    lines: list[str] = []
    summary = {name: {"K": next(r["K"] for r in curves + timing if r["data"] == name)} for name in sets}
    if timing:
        lines += fit_time_table(timing, summary)
    lines += ["## Accuracy on test at 10 budgets", ""]
    labels = {name: spec.short_label for name, spec in POLICIES.items()} | {"oracle": "oracle"}
    for name in sets:
        rows = {(r["policy"], round(r["position"], 6)): r for r in curves if r["data"] == name}
        positions = sorted({p for _, p in rows})
        policies = ["eenet", *BASELINES, "oracle"]
        lines += [
            f"### {name} (K = {summary[name]['K']})",
            "",
            "Accuracy (test cost / budget in brackets); gap closed = (EENet - best baseline) / "
            "(oracle - best baseline).",
            "",
            "| position | budget ms | " + " | ".join(labels[p] for p in policies)
            + " | EENet - best baseline | gap closed |",
            "|---|---|" + "---|" * (len(policies) + 2),
        ]
        gaps, margins, kept = [], [], []
        for position in positions:
            cells = [f"{rows[(p, position)]['accuracy']:.4f} ({rows[(p, position)]['cost_ratio']:.2f})"
                     if (p, position) in rows else "not run" for p in policies]
            budget = rows[("oracle", position)]["budget"]
            if not all((p, position) in rows for p in policies):
                lines.append(f"| {position:.3f} | {budget:.4f} | " + " | ".join(cells) + " | | |")
                continue
            best = max(rows[(p, position)]["accuracy"] for p in BASELINES)
            eenet = rows[("eenet", position)]["accuracy"]
            oracle = rows[("oracle", position)]["accuracy"]
            gap = (eenet - best) / (oracle - best) if oracle > best else float("nan")
            gaps.append(gap)
            margins.append(eenet - best)
            kept.append(rows[("eenet", position)]["cost_ratio"])
            lines.append(f"| {position:.3f} | {budget:.4f} | " + " | ".join(cells)
                         + f" | {100 * (eenet - best):+.2f} pts | {gap:.0%} |")
        if not gaps:
            lines += ["", "Not enough fits to compare.", ""]
            continue
        summary[name] |= {"mean_gap_closed": float(np.nanmean(gaps)), "min_margin": float(min(margins)),
                          "max_cost_ratio": max(kept), "budgets_compared": len(gaps)}
        lines += [
            "",
            f"EENet at the {len(gaps)} budgets with every fit: mean gap closed {np.nanmean(gaps):.0%}; worst "
            f"margin over the best baseline {100 * min(margins):+.2f} pts; test cost / budget "
            f"{min(kept):.3f} to {max(kept):.3f}.",
            "",
        ]
    return lines, summary


def plot(path: Path, curves: list[dict], sets: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.6), squeeze=False)
    for ax, name in zip(axes[0], sets, strict=True):
        for policy in ("eenet", "maxprob", "entropy", "patience", "learned-score", "oracle"):
            rows = sorted((r for r in curves if r["data"] == name and r["policy"] == policy),
                          key=lambda r: r["budget"])
            label = "oracle" if policy == "oracle" else POLICIES[policy].short_label
            style = {"eenet": "o-", "oracle": "k--"}.get(policy, ".-")
            ax.plot([r["budget"] for r in rows], [r["accuracy"] for r in rows], style, label=label, ms=4)
        ax.set_title(name)
        ax.set_xlabel("budget (ms per sample)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS,
                        help="the first is the reference of the fit-time ratios")
    parser.add_argument("--fit-rows", type=int, default=2000, help="val rows every policy is fitted on")
    parser.add_argument("--test-rows", type=int, default=4000, help="test rows every policy is scored on")
    parser.add_argument("--repeats", type=int, default=3, help="timed fits per set")
    parser.add_argument("--part", choices=("all", "timing", "curves"), default="all",
                        help="run one part only (its fits go to --cache; no tables written)")
    parser.add_argument("--n-jobs", type=int, default=1, help="processes for the curves' fits")
    parser.add_argument("--cache", type=Path, help="folder of per-fit results, reused when present")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="tiny run: 300 rows, 3 budgets, max_epochs=2")
    parser.add_argument("--cached-only", action="store_true",
                        help="fit nothing: tables from the fits in --cache, the others marked 'not run'")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    provenance = Provenance.start("benchmarks/many_exits.py", argv)
    torch.set_num_threads(1)
    config = {"fit_rows": args.fit_rows, "test_rows": args.test_rows, "repeats": args.repeats,
              "positions": list(POSITIONS), "eenet_params": {}, "cached_only": args.cached_only}
    stem = "many_exits"
    if args.quick:
        config |= {"fit_rows": 300, "test_rows": 300, "repeats": 1, "eenet_params": {"max_epochs": 2},
                   "positions": [POSITIONS[0], POSITIONS[4], POSITIONS[-1]]}
        stem = "many_exits_quick"
    timing, curves = [], []
    if args.part != "curves":
        timing = run_timing(args.sets, config, args.cache, args.quiet)
    if args.part != "timing":
        curves = run_curves(args.sets, config, args.cache, args.n_jobs, args.quiet)
    provenance.finish()
    if args.part != "all":
        return []
    tables, summary = summarise(timing, curves, args.sets)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, png_path = (args.out_dir / f"{stem}.{ext}" for ext in ("csv", "md", "png"))
    fields = ["part", "data", "K", "policy", "position", "seed", "budget", "accuracy", "cost_ratio", "fit_s",
              "cpu_s"]
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(timing + curves)
    plot(png_path, curves, args.sets)
    fits = [row for row in timing + curves if row["policy"] != "oracle"]
    n_cached = sum(row["cached"] for row in fits)
    header = [
        "# Networks with many exits: fit time, accuracy and budget kept at K = 4 .. 16",
        "",
        *provenance.lines(),
        "",
        f"Sets: {', '.join(args.sets)} (CNNs on Fashion-MNIST with an exit after every block; the deep sets "
        "from `benchmarks/make_deep_cnn_logits.py`). Every policy fitted on the first "
        f"{config['fit_rows']} val rows and scored on the first {config['test_rows']} test rows of each set "
        "(the same images for every K); costs in measured ms (`costs_ms`). EENet with its defaults "
        f"{json.dumps(eenet_params(config))}, random_state 0; baselines: "
        f"{', '.join(POLICIES[name].short_label for name in BASELINES)}. "
        "The machine's 2 CPUs were shared with other jobs (load average above 10 for much of the run): "
        "absolute seconds are indicative; the fit-time ratios come from fits interleaved in one process."
        + (f" {n_cached} of the {len(fits)} fits were read from `--cache` (earlier runs of the same "
           "command with `--part timing` / `--part curves`, same code and settings)." if n_cached else ""),
        "",
        f"![accuracy against budget]({png_path.name})",
        "",
    ]
    md_path.write_text("\n".join(header + tables) + "\n")
    if not args.quiet:
        print(json.dumps(summary, indent=1))
    return [md_path, csv_path, png_path]


if __name__ == "__main__":
    main()
