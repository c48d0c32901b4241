"""Anytime ensembles against each exit alone: accuracy gain per shipped set, policy and budget.

Every policy is fitted twice on the ``val`` split at 10 budgets, as it is and wrapped in
``AnytimeEnsemble`` (weights fitted on the same split, the default ``alpha``), and scored on
``test``. Gain = ensemble minus plain, in accuracy points. Two oracle bounds on ``test``:
each exit's own predictions (what a plain policy can make) and the ensemble's
(``oracle_accuracy(..., weights=weights_)``, what a wrapped policy can make).

    python benchmarks/anytime_ensembles.py          # writes benchmarks/results/anytime_ensembles.{md,csv}
    python benchmarks/anytime_ensembles.py --quick  # one set, 3 budgets, one seed, short EENet fits
"""

from __future__ import annotations

import argparse
import csv
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _provenance import Provenance
from joblib import Parallel, delayed
from tqdm import tqdm

from eenet_sklearn import AnytimeEnsemble
from eenet_sklearn._registry import make_policy, policy_spec
from eenet_sklearn.base import SmallFittingSetWarning
from eenet_sklearn.datasets import EXIT_LOGIT_SETS, load_exit_logits
from eenet_sklearn.metrics import budget_at_position, oracle_accuracy

RESULTS = Path(__file__).parent / "results"
#: The policies compared; "eenet" is fitted once per seed, the others are deterministic.
POLICIES = ("eenet", "maxprob", "entropy", "patience")
#: A gain below this (in points) counts as a loss in the summary.
LOSS_POINTS = 0.05


def _fit(policy, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallFittingSetWarning)
        start = time.perf_counter()
        policy.fit(X, y)
        return policy, time.perf_counter() - start


def run(sets, n_budgets, seeds, quiet, eenet_params, n_rows, n_jobs=1, policies=POLICIES):
    jobs = [(name, i) for name in sets for i in range(n_budgets)]
    # One (set, budget) per task, in the order of the table.
    tasks = (
        delayed(_one_budget)(name, i, n_budgets, seeds, eenet_params, n_rows, policies) for name, i in jobs
    )
    results = Parallel(n_jobs=n_jobs, return_as="generator")(tasks)
    return [row for part in tqdm(results, total=len(jobs), desc="budgets", disable=quiet) for row in part]


def _one_budget(name, i, n_budgets, seeds, eenet_params, n_rows, policies):
    torch.set_num_threads(1)  # the scorer is tiny: extra threads only add overhead
    rows = []
    d = load_exit_logits(name)
    X, y = d.val_logits[:n_rows], d.val_labels[:n_rows]
    X_test, y_test = d.test_logits[:n_rows], d.test_labels[:n_rows]
    costs = d.costs.astype(np.float64)
    budget = budget_at_position(costs, (i + 1) / (n_budgets + 1))
    weights = None
    for policy_name in policies:
        runs = seeds if policy_name == "eenet" else [None]
        result = {"plain": [], "ensemble": [], "plain_cost": [], "ensemble_cost": [], "fit_s": []}
        for seed in runs:
            params = {"random_state": seed, **eenet_params} if policy_name == "eenet" else {}
            plain, _ = _fit(make_policy(policy_name, costs, budget, **params), X, y)
            wrapped = AnytimeEnsemble(make_policy(policy_name, costs, budget, **params))
            ensemble, fit_s = _fit(wrapped, X, y)
            weights = ensemble.weights_
            result["plain"].append(plain.score(X_test, y_test))
            result["ensemble"].append(ensemble.score(X_test, y_test))
            result["plain_cost"].append(plain.expected_cost(X_test) / budget)
            result["ensemble_cost"].append(ensemble.expected_cost(X_test) / budget)
            result["fit_s"].append(fit_s)
        plain_acc, ens_acc = float(np.median(result["plain"])), float(np.median(result["ensemble"]))
        rows.append(
            {
                "data": name,
                "n_exits": len(costs),
                "budget": budget,
                "position": (i + 1) / (n_budgets + 1),
                "policy": policy_name,
                "plain_acc": plain_acc,
                "ensemble_acc": ens_acc,
                "gain_points": 100 * (ens_acc - plain_acc),
                "plain_cost_ratio": float(np.max(result["plain_cost"])),
                "ensemble_cost_ratio": float(np.max(result["ensemble_cost"])),
                "ensemble_fit_s": float(np.median(result["fit_s"])),
                "runs": len(runs),
            }
        )
    # The weights are fitted on val alone (the same for every policy and seed).
    for policy_name, bound in (
        ("oracle_plain", oracle_accuracy(X_test, y_test, costs, budget)),
        ("oracle_ensemble", oracle_accuracy(X_test, y_test, costs, budget, weights=weights)),
    ):
        rows.append(
            {
                "data": name, "n_exits": len(costs), "budget": budget,
                "position": (i + 1) / (n_budgets + 1), "policy": policy_name,
                "plain_acc": bound if policy_name == "oracle_plain" else np.nan,
                "ensemble_acc": bound if policy_name == "oracle_ensemble" else np.nan,
                "gain_points": np.nan, "plain_cost_ratio": np.nan, "ensemble_cost_ratio": np.nan,
                "ensemble_fit_s": np.nan, "runs": 1,
            }
        )
    return rows


def _label(name: str) -> str:
    return policy_spec(name).short_label


def to_markdown(rows, seeds, provenance, eenet_params) -> str:
    policies = list(dict.fromkeys(row["policy"] for row in rows if not row["policy"].startswith("oracle")))
    n_budgets = len({(row["data"], row["budget"]) for row in rows}) // len({row["data"] for row in rows})
    lines = [
        "# Anytime ensembles: accuracy gain over each exit alone (fit on val, report on test)",
        "",
        *provenance.lines(),
        f"EENet seeds: {seeds} (median over them); EENet parameters: "
        f"{eenet_params or 'the defaults'}. The other policies are deterministic (one run).",
        "",
        "Each policy is fitted as it is (plain) and wrapped in `AnytimeEnsemble` (weights fitted on "
        f"val by penalised likelihood, `alpha=1`), at {n_budgets} budgets evenly spaced strictly between the "
        "first and last exit's cost (ms). Cells: ensemble accuracy (gain over plain, points). "
        "Oracle bounds on test, at each budget: **plain** = best exit assignment of each exit's own "
        "predictions (bounds the plain policies), **ensembled** = the same for the ensemble's "
        "predictions at each exit (bounds the wrapped policies). Cost/B: the largest test mean "
        "cost / budget of the wrapped policies.",
        "",
    ]
    summary = []
    for name in dict.fromkeys(row["data"] for row in rows):
        part = [row for row in rows if row["data"] == name]
        budgets = list(dict.fromkeys(row["budget"] for row in part))
        header = " | ".join(f"{_label(p)} plain | {_label(p)} ensemble" for p in policies)
        lines += [
            f"## {name} ({part[0]['n_exits']} exits)",
            "",
            f"| budget (ms) | position | {header} | oracle plain | oracle ensembled | cost/B |",
            "|---|---|" + "---|---|" * len(policies) + "---|---|---|",
        ]
        for budget in budgets:
            at = {row["policy"]: row for row in part if row["budget"] == budget}
            cells = " | ".join(
                f"{at[p]['plain_acc']:.4f} | {at[p]['ensemble_acc']:.4f} ({at[p]['gain_points']:+.2f})"
                for p in policies
            )
            cost = max(at[p]["ensemble_cost_ratio"] for p in policies)
            lines.append(
                f"| {budget:.4f} | {at[policies[0]]['position']:.2f} | {cells} "
                f"| {at['oracle_plain']['plain_acc']:.4f} | {at['oracle_ensemble']['ensemble_acc']:.4f} "
                f"| {cost:.3f} |"
            )
        lines.append("")
        for p in policies:
            gains = np.array([row["gain_points"] for row in part if row["policy"] == p])
            summary.append((name, p, gains))
    lines += [
        "## Summary: gain of the ensemble, in points, over the budgets",
        "",
        f"A loss is a gain below -{LOSS_POINTS} points.",
        "",
        "| data | policy | mean | min | max | losses |",
        "|---|---|---|---|---|---|",
    ]
    for name, p, gains in summary:
        losses = int((gains < -LOSS_POINTS).sum())
        lines.append(
            f"| {name} | {_label(p)} | {gains.mean():+.2f} | {gains.min():+.2f} | {gains.max():+.2f} "
            f"| {losses} of {len(gains)} |"
        )
    never = [p for p in policies if all((g >= -LOSS_POINTS).all() for n, q, g in summary if q == p)]
    lines += [
        "",
        "Never loses (on every set and budget above): "
        + (", ".join(_label(p) for p in never) if never else "none of the policies")
        + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(EXIT_LOGIT_SETS), choices=EXIT_LOGIT_SETS)
    parser.add_argument("--budgets", type=int, default=10, help="number of budgets per set")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="EENet's seeds")
    parser.add_argument("--max-epochs", type=int, default=None, help="override EENet's max_epochs")
    parser.add_argument("--rows", type=int, default=None, help="use the first ROWS of each split")
    parser.add_argument(
        "--quick", action="store_true", help="one set, 3 budgets, 1 seed, 2 epochs, 2000 rows"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "anytime_ensembles")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--n-jobs", type=int, default=1, help="processes, one (set, budget) each")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.sets, args.budgets, args.seeds = args.sets[:1], 3, args.seeds[:1]
        args.max_epochs, args.rows = args.max_epochs or 2, args.rows or 2000
    torch.set_num_threads(1)  # the scorer is tiny: extra threads only add overhead
    eenet_params = {} if args.max_epochs is None else {"max_epochs": args.max_epochs}
    provenance = Provenance.start("benchmarks/anytime_ensembles.py", argv)
    rows = run(
        args.sets, args.budgets, args.seeds, args.quiet, eenet_params, args.rows, args.n_jobs, args.policies
    )
    provenance.finish()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(rows, args.seeds, provenance, eenet_params)
    md, csv_path = args.out.with_suffix(".md"), args.out.with_suffix(".csv")
    md.write_text(markdown)
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if not args.quiet:
        print(markdown)
    return [md, csv_path]


if __name__ == "__main__":
    main()
