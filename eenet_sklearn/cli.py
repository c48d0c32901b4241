"""Command-line entry point: ``python -m eenet_sklearn demo``."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .baselines import MaxProbPolicy
from .datasets import EXIT_LOGIT_SETS, load_exit_logits
from .policy import EarlyExitPolicy


def demo(
    data_name: str, budget_positions: list[float], max_epochs: int, verbose: int = 0, quiet: bool = False
) -> str:
    """Fit EENet and the MSDNet rule on real per-exit logits; return the results table."""
    data = load_exit_logits(data_name)
    costs = data.costs
    accuracies = [float(np.mean(data.test_logits[:, k].argmax(1) == data.test_labels))
                  for k in range(len(costs))]
    lines = [
        f"Data: {data_name}, {data.meta['dataset'].split(' (')[0]}, {len(costs)} exits; "
        f"fit on val ({len(data.val_labels)} samples), report on test ({len(data.test_labels)}).",
        "Per-exit test accuracy: " + ", ".join(f"{a:.4f}" for a in accuracies),
        "Exit costs (ms):        " + ", ".join(f"{c:.4f}" for c in costs),
        "",
        "| budget (ms) | EENet acc | EENet cost | MSDNet-rule acc | MSDNet-rule cost | EENet exits (%) |",
        "|---|---|---|---|---|---|",
    ]
    for position in budget_positions:
        budget = float(costs[0] + position * (costs[-1] - costs[0]))
        start = time.perf_counter()
        policy = EarlyExitPolicy(
            costs=costs, budget=budget, max_epochs=max_epochs, random_state=0, verbose=verbose
        ).fit(data.val_logits, data.val_labels)
        seconds = time.perf_counter() - start
        rule = MaxProbPolicy(costs=costs, budget=budget).fit(data.val_logits, data.val_labels)
        exits = np.bincount(policy.predict_exit(data.test_logits), minlength=len(costs))
        lines.append(
            f"| {budget:.4f} | {policy.score(data.test_logits, data.test_labels):.4f} "
            f"| {policy.expected_cost(data.test_logits):.4f} "
            f"| {rule.score(data.test_logits, data.test_labels):.4f} "
            f"| {rule.expected_cost(data.test_logits):.4f} "
            f"| {' / '.join(f'{100 * e / exits.sum():.0f}' for e in exits)} |"
        )
        if not quiet:
            print(f"budget {budget:.4f} ms: EENet fitted in {seconds:.1f} s", file=sys.stderr, flush=True)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eenet-sklearn", description="Budgeted early-exit policies for multi-exit networks."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser(
        "demo", help="fit EENet and the MSDNet rule on real per-exit logits and print a table"
    )
    run_demo.add_argument("--data", choices=EXIT_LOGIT_SETS, default="fashion_cnn4")
    run_demo.add_argument(
        "--budgets",
        type=float,
        nargs="+",
        default=[0.1, 0.25, 0.5, 0.75],
        help="budgets as positions between the first (0) and last (1) exit cost",
    )
    run_demo.add_argument("--max-epochs", type=int, default=60)
    run_demo.add_argument("--quiet", action="store_true", help="print only the table")
    run_demo.add_argument("--verbose", action="store_true", help="show skorch's epoch log")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        bad = [b for b in args.budgets if not 0.0 <= b <= 1.0]
        if bad:
            build_parser().error(f"--budgets must lie in [0, 1], got {bad}")
        print(demo(args.data, args.budgets, args.max_epochs, verbose=int(args.verbose), quiet=args.quiet))
    return 0
