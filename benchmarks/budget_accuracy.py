"""EENet against the MSDNet rule at 8 budgets on every shipped set of real per-exit logits.

Fits on the ``val`` split, reports on ``test``: accuracy and mean cost (relative to the
budget) of ``EarlyExitPolicy`` over several seeds and of ``MaxProbPolicy`` (the
MSDNet budgeted rule), with the checks of issue #2: test cost within
[0.95, 1.02] x budget, EENet no more than 0.3 points below the rule at any budget,
and above it on average. The many-exit sets (``datasets.MANY_EXIT_SETS``) are left out:
``benchmarks/many_exits.py`` measures them.

    python benchmarks/budget_accuracy.py            # writes benchmarks/results/budget_accuracy.{md,csv}
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
from _provenance import Provenance
from tqdm import tqdm

from eenet_sklearn._registry import make_policy
from eenet_sklearn.datasets import EXIT_LOGIT_SETS, MANY_EXIT_SETS, load_exit_logits
from eenet_sklearn.metrics import budget_at_position

RESULTS = Path(__file__).parent / "results"
#: The shipped sets but the many-exit ones (``benchmarks/many_exits.py`` covers those).
SETS = tuple(name for name in EXIT_LOGIT_SETS if name not in MANY_EXIT_SETS)


def run(n_budgets: int, seeds: list[int], quiet: bool, policy_params: dict) -> list[dict]:
    rows = []
    jobs = [(name, i) for name in SETS for i in range(n_budgets)]
    data = {name: load_exit_logits(name) for name in SETS}
    for name, i in tqdm(jobs, desc="budgets", disable=quiet):
        d = data[name]
        # n_budgets evenly spaced budgets strictly between the first and last exit cost.
        budget = budget_at_position(d.costs, (i + 1) / (n_budgets + 1))
        rule = make_policy("maxprob", d.costs, budget).fit(d.val_logits, d.val_labels)
        eenet_acc, eenet_cost, eenet_spent, fit_s = [], [], [], []
        for seed in seeds:
            start = time.perf_counter()
            policy = make_policy(
                "eenet", d.costs, budget, random_state=seed, **policy_params
            ).fit(d.val_logits, d.val_labels)
            fit_s.append(time.perf_counter() - start)
            eenet_acc.append(policy.score(d.test_logits, d.test_labels))
            eenet_cost.append(policy.expected_cost(d.test_logits) / budget)
            # EENet may choose to spend less than the budget (spend_less): test cost / chosen cost.
            eenet_spent.append(policy.expected_cost(d.test_logits) / policy.target_cost_)
        rows.append(
            {
                "data": name,
                "budget": budget,
                "budget_frac": (budget - d.costs[0]) / (d.costs[-1] - d.costs[0]),
                "eenet_acc_median": float(np.median(eenet_acc)),
                "eenet_acc_min": float(np.min(eenet_acc)),
                "eenet_acc_max": float(np.max(eenet_acc)),
                "eenet_cost_ratio_min": float(np.min(eenet_cost)),
                "eenet_cost_ratio_max": float(np.max(eenet_cost)),
                "eenet_target_ratio_min": float(np.min(eenet_spent)),
                "eenet_target_ratio_max": float(np.max(eenet_spent)),
                "msdnet_acc": rule.score(d.test_logits, d.test_labels),
                "msdnet_cost_ratio": rule.expected_cost(d.test_logits) / budget,
                "fit_s_median": float(np.median(fit_s)),
            }
        )
    return rows


def to_markdown(rows: list[dict], seeds: list[int], provenance: Provenance) -> str:
    lines = [
        "# EENet vs the MSDNet rule at 8 budgets (fit on val, report on test)",
        "",
        *provenance.lines(),
        f"Seeds: {seeds}.",
        "",
        "Costs in ms (the sets' `costs_ms`). EENet accuracy: median [min, max] over the seeds; "
        "cost: test mean cost / budget, [min, max] over the seeds. Diff: EENet median minus "
        "the MSDNet rule, in accuracy points. Check: EENet's test cost within [0.95, 1.02] x the "
        "cost it chose to spend on val (`target_cost_`: the budget, or less where spending less "
        "was clearly more accurate there) for every seed, and at most 1.02 x budget; and EENet's "
        "worst seed no more than 0.3 points below the rule.",
        "",
    ]
    for name in dict.fromkeys(row["data"] for row in rows):
        part = [row for row in rows if row["data"] == name]
        lines += [
            f"## {name}",
            "",
            "| budget (ms) | position | EENet acc | EENet cost/B | MSDNet acc | MSDNet cost/B "
            "| diff (pts) | fit s | check |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        diffs = []
        for row in part:
            diff = 100 * (row["eenet_acc_median"] - row["msdnet_acc"])
            worst = 100 * (row["eenet_acc_min"] - row["msdnet_acc"])
            diffs.append(diff)
            cost_ok = (
                0.95 <= row["eenet_target_ratio_min"]
                and row["eenet_target_ratio_max"] <= 1.02
                and row["eenet_cost_ratio_max"] <= 1.02
            )
            ok = cost_ok and worst >= -0.3
            lines.append(
                f"| {row['budget']:.4f} | {row['budget_frac']:.2f} "
                f"| {row['eenet_acc_median']:.4f} [{row['eenet_acc_min']:.4f}, {row['eenet_acc_max']:.4f}] "
                f"| [{row['eenet_cost_ratio_min']:.3f}, {row['eenet_cost_ratio_max']:.3f}] "
                f"| {row['msdnet_acc']:.4f} | {row['msdnet_cost_ratio']:.3f} "
                f"| {diff:+.2f} | {row['fit_s_median']:.1f} | {'ok' if ok else 'FAIL'} |"
            )
        lines += ["", f"Mean diff over the budgets: {np.mean(diffs):+.3f} points.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=int, default=8, help="number of budgets per set")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=None, help="override max_epochs")
    parser.add_argument("--out", type=Path, default=RESULTS / "budget_accuracy")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the scorer is tiny: extra threads only add overhead
    params = {} if args.max_epochs is None else {"max_epochs": args.max_epochs}
    provenance = Provenance.start("benchmarks/budget_accuracy.py", argv)
    rows = run(args.budgets, args.seeds, args.quiet, params)
    provenance.finish()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(rows, args.seeds, provenance)
    args.out.with_suffix(".md").write_text(markdown)
    with args.out.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(markdown)


if __name__ == "__main__":
    main()
