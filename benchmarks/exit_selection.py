"""Which exits to keep: ``select_exits`` against keeping every exit and evenly spaced exits.

For each shipped set of real per-exit logits (``eenet_sklearn.datasets.EXIT_LOGIT_SETS``),
with its cumulative costs in milliseconds (``costs_ms``, which include every head on the way):

1. **Head costs.** A set that ships per-head costs (a ``head_costs`` entry) uses them.
   Otherwise they are *estimated*: the set's architecture (as its README describes it)
   is rebuilt with random weights, each stage and each head is timed alone (batch 1, one
   CPU thread, median over ``--timing-repeats`` after 50 warm-up passes), and each head
   takes its measured share of the shipped increment ``costs[k] - costs[k - 1]`` (so the
   shipped totals stay as measured; only their split between stage and head is estimated
   here). The MiniLM layer is stood in for by ``torch.nn.TransformerEncoderLayer(384, 12,
   1536)`` on 27 tokens (the snippets' mean length), its head by masked mean pooling and
   a linear layer to 2 classes.
2. **Selection** on the ``val`` split: ``select_exits`` with ``MaxProbPolicy`` (the default),
   the 10 budgets at positions 1/11 .. 10/11 between the first and the last exit's cost,
   2-fold cross-fitting, once per seed (``--seeds``: the folds' shuffle); again with free
   heads (``head_costs=None``) as a control. Sets of more than 6 exits (greedy search from
   9 exits on, thousands of fits): ``--many-exits-seeds`` seeds (1) and no control.
3. **Test.** For the subset each seed chose, for every exit, and for as many exits as
   chosen evenly spaced from the first to the last (``round(linspace(0, K - 1, n))``),
   ``MaxProbPolicy`` is fitted on all of ``val``
   with the subset's own costs (``exit_subset_costs``) at each budget and scored on
   ``test``. A subset whose first exit costs more than a budget cannot meet it: scored 0
   and shown as "-". Accuracies are medians over the seeds; "all exits" needs no seed.
4. **How many exits.** For every number of exits ``n``: the best subset of that size the
   selection met (seed of the first run), ``n`` evenly spaced from the first exit to the
   last, and an exit every ``K/n`` blocks (exit ``round((i + 1) K / n) - 1`` for ``i < n``,
   which leaves out the first exit), by mean test accuracy over the 10 budgets.
5. **Dearer heads.** For sets of up to 6 exits, hypothetical heads costing 25%, 50% and 75%
   (``--shares``) of each exit's increment (the shipped totals kept, the rest the stage): the
   subset chosen (first seed) and its mean test accuracy against every exit and evenly
   spaced exits.

    python benchmarks/exit_selection.py             # writes benchmarks/results/exit_selection.{md,csv}
    python benchmarks/exit_selection.py --quick     # one small set, one seed: exit_selection_quick.*
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from _provenance import Provenance
from torch import nn

from eenet_sklearn import MaxProbPolicy, exit_subset_costs, select_exits
from eenet_sklearn.base import SmallFittingSetWarning
from eenet_sklearn.datasets import EXIT_LOGIT_SETS, load_exit_logits
from eenet_sklearn.metrics import budget_at_position

RESULTS = Path(__file__).resolve().parent / "results"
POSITIONS = np.arange(1, 11) / 11
QUICK = {"sets": ["mnist_mlp3"], "seeds": [0], "timing_repeats": 20, "max_rows": 1000, "shares": [0.5]}
#: Sets with more exits than this get ``--many-exits-seeds`` seeds and no free-heads control.
MANY_EXITS = 6


class _PoolLinear(nn.Module):
    """Adaptive average pooling to 2x2, flatten, linear: the heads of ``fashion_cnn4``."""

    def __init__(self, channels: int, n_classes: int) -> None:
        super().__init__()
        self.pool, self.linear = nn.AdaptiveAvgPool2d(2), nn.Linear(4 * channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.pool(x).flatten(1))


class _MaskedMeanLinear(nn.Module):
    """Mean of the token states over the attention mask, then linear: the MiniLM heads."""

    def __init__(self, hidden: int, n_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(x.shape[:2], dtype=x.dtype)[..., None]
        return self.linear((x * mask).sum(1) / mask.sum(1))


def _architecture(name: str) -> tuple[list[nn.Module], list[nn.Module], torch.Tensor]:
    """Stages, heads and one input of the network behind a shipped set (random weights)."""
    if name == "fashion_cnn4":
        stages, heads, previous = [], [], 1
        for k, width in enumerate((16, 32, 64, 128)):
            layers: list[nn.Module] = [nn.Conv2d(previous, width, 3, padding=1), nn.BatchNorm2d(width)]
            stages.append(nn.Sequential(*layers, nn.ReLU(), *([nn.MaxPool2d(2)] if k < 3 else [])))
            heads.append(_PoolLinear(width, 10))
            previous = width
        return stages, heads, torch.rand(1, 1, 28, 28)
    if name == "mnist_mlp3":
        widths = (784, 5, 64, 64)
        stages = [nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in pairwise(widths)]
        heads = [nn.Linear(width, 10) for width in widths[1:]]
        return stages, heads, torch.rand(1, 784)
    if name == "reviews_minilm6":
        stages = [nn.TransformerEncoderLayer(384, 12, 1536, batch_first=True) for _ in range(6)]
        return stages, [_MaskedMeanLinear(384, 2) for _ in range(6)], torch.randn(1, 27, 384)
    raise KeyError(name)


def head_shares(name: str, repeats: int) -> np.ndarray:
    """Each head's share of the time of its stage and head together, timed alone."""
    stages, heads, x = _architecture(name)
    times = np.zeros((repeats, len(stages), 2))
    with torch.inference_mode():
        for module in (*stages, *heads):
            module.eval()
        for repeat in range(50 + repeats):
            state = x
            for k, (stage, head) in enumerate(zip(stages, heads, strict=True)):
                start = time.perf_counter()
                state = stage(state)
                middle = time.perf_counter()
                head(state)
                end = time.perf_counter()
                if repeat >= 50:
                    times[repeat - 50, k] = middle - start, end - middle
    median = np.median(times, axis=0)
    return median[:, 1] / median.sum(axis=1)


def head_costs_of(name: str, data, repeats: int) -> tuple[np.ndarray, str]:
    """Per-head costs in the unit of ``data.costs``, and how they were obtained."""
    shipped = data.get("head_costs")
    if shipped is not None:
        return np.asarray(shipped, dtype=float), "shipped with the set"
    try:
        shares = head_shares(name, repeats)
    except KeyError:
        return np.zeros(len(data.costs)), "not known for this set: heads taken as free"
    return np.diff(data.costs, prepend=0.0) * shares, "estimated: measured head share x shipped increment"


def evenly_spaced(n_exits: int, n_kept: int) -> tuple[int, ...]:
    """``n_kept`` exits evenly spaced from the first to the last (rounded half up)."""
    if n_kept == 1:
        return (n_exits - 1,)
    return tuple(int(np.floor(k + 0.5)) for k in np.linspace(0, n_exits - 1, n_kept))


def every_nth(n_exits: int, n_kept: int) -> tuple[int, ...]:
    """Every ``n_exits / n_kept``-th exit, the last included (an exit every few blocks)."""
    return tuple(int(np.floor((i + 1) * n_exits / n_kept + 0.5)) - 1 for i in range(n_kept))


def test_curve(
    data, kept: tuple[int, ...], heads: np.ndarray, budgets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Test accuracy and test mean cost of MaxProbPolicy over ``kept``, fitted on all of val."""
    costs = exit_subset_costs(data.costs, kept, heads)
    accuracy, cost = np.zeros(len(budgets)), np.full(len(budgets), np.nan)
    index = list(kept)
    for b, budget in enumerate(budgets):
        if budget < costs[0]:
            continue
        if len(kept) == 1:
            predicted = data.test_logits[:, index[0]].argmax(axis=1)
            accuracy[b], cost[b] = float(np.mean(predicted == data.test_labels)), costs[0]
            continue
        policy = MaxProbPolicy(costs=costs, budget=budget).fit(data.val_logits[:, index], data.val_labels)
        accuracy[b] = policy.score(data.test_logits[:, index], data.test_labels)
        cost[b] = policy.expected_cost(data.test_logits[:, index])
    return accuracy, cost


def run_set(name: str, args) -> tuple[list[dict], dict]:
    data = load_exit_logits(name)
    if args.max_rows:
        for split in ("val", "test"):
            data[f"{split}_logits"] = data[f"{split}_logits"][: args.max_rows]
            data[f"{split}_labels"] = data[f"{split}_labels"][: args.max_rows]
    n_exits = len(data.costs)
    budgets = budget_at_position(data.costs, POSITIONS)
    heads, how = head_costs_of(name, data, args.timing_repeats)
    selections, free_selections, seconds = [], [], []
    X, y = data.val_logits, data.val_labels
    # Many exits: greedy search, hundreds of subsets; fewer seeds and no free-heads control.
    many = n_exits > MANY_EXITS
    for seed in args.seeds[: args.many_exits_seeds] if many else args.seeds:
        start = time.perf_counter()
        selections.append(select_exits(X, y, data.costs, heads, budgets=budgets, random_state=seed))
        seconds.append(time.perf_counter() - start)
        if not many:
            free_selections.append(select_exits(X, y, data.costs, None, budgets=budgets, random_state=seed))
    every = tuple(range(n_exits))
    curves: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}

    def curve(kept: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        if kept not in curves:
            curves[kept] = test_curve(data, kept, heads, budgets)
        return curves[kept]

    chosen = [tuple(int(k) for k in result.kept) for result in selections]
    spaced = [evenly_spaced(n_exits, len(kept)) for kept in chosen]
    rows = []
    for b, budget in enumerate(budgets):
        rows.append(
            {
                "data": name,
                "position": round(float(POSITIONS[b]), 4),
                "budget_ms": float(budget),
                "selected_acc": float(np.median([curve(kept)[0][b] for kept in chosen])),
                "selected_cost_ratio": float(np.median([curve(kept)[1][b] for kept in chosen])) / budget,
                "all_acc": float(curve(every)[0][b]),
                "all_cost_ratio": float(curve(every)[1][b]) / budget,
                "spaced_acc": float(np.median([curve(kept)[0][b] for kept in spaced])),
                "spaced_cost_ratio": float(np.median([curve(kept)[1][b] for kept in spaced])) / budget,
            }
        )
    first = selections[0]
    by_size = []
    for size, subset in first.best_by_size.items():
        by_size.append(
            {
                "n": size,
                "best": subset,
                "best_val": float(first.subset_mean_accuracy[first.subsets.index(subset)]),
                "best_test": float(curve(subset)[0].mean()),
                "spaced": evenly_spaced(n_exits, size),
                "spaced_test": float(curve(evenly_spaced(n_exits, size))[0].mean()),
                "nth": every_nth(n_exits, size),
                "nth_test": float(curve(every_nth(n_exits, size))[0].mean()),
            }
        )
    summary = {
        "data": name,
        "n_exits": n_exits,
        "costs": data.costs,
        "head_costs": heads,
        "head_costs_how": how,
        "chosen": chosen,
        "chosen_free": [tuple(int(k) for k in result.kept) for result in free_selections],
        "search": first.search,
        "n_subsets": len(first.subsets),
        "n_fits": first.n_fits,
        "select_s": float(np.median(seconds)),
        "by_size": by_size,
        "sweep": [] if many else head_share_sweep(data, budgets, args.seeds[0], args.shares),
    }
    return rows, summary


def head_share_sweep(data, budgets: np.ndarray, seed: int, shares: list[float]) -> list[dict]:
    """Hypothetical heads costing ``share`` of each exit's increment: which exits are kept,
    and the test accuracy of the choice against every exit and evenly spaced exits."""
    n_exits = len(data.costs)
    found = []
    for share in shares:
        heads = np.diff(data.costs, prepend=0.0) * share
        X, y = data.val_logits, data.val_labels
        result = select_exits(X, y, data.costs, heads, budgets=budgets, random_state=seed)
        kept = tuple(int(k) for k in result.kept)
        spaced = evenly_spaced(n_exits, len(kept))
        found.append(
            {
                "share": share,
                "kept": kept,
                "selected_test": float(test_curve(data, kept, heads, budgets)[0].mean()),
                "all_test": float(test_curve(data, tuple(range(n_exits)), heads, budgets)[0].mean()),
                "spaced": spaced,
                "spaced_test": float(test_curve(data, spaced, heads, budgets)[0].mean()),
            }
        )
    return found


def _subset(kept: tuple[int, ...]) -> str:
    return "{" + ", ".join(str(k) for k in kept) + "}"


def _acc(value: float) -> str:
    return "-" if value == 0.0 else f"{value:.4f}"


def to_markdown(rows: list[dict], summaries: list[dict], args, provenance: Provenance) -> str:
    lines = [
        "# Which exits to keep: selected subset vs every exit vs evenly spaced exits",
        "",
        *provenance.lines(runtime_note="; the CPUs were shared with other sessions: timings are indicative"),
        f"Seeds (cross-fitting folds of the selection): {args.seeds}.",
        "",
        "Selection on `val` (`select_exits`, `MaxProbPolicy`, 2-fold cross-fitting, mean accuracy over "
        "the 10 budgets at positions 1/11 .. 10/11); accuracy on `test` of `MaxProbPolicy` fitted on all "
        "of `val` over each subset with its own costs (the removed heads' costs taken off the later "
        "exits). Selected and evenly spaced: median over the seeds; evenly spaced has as many exits as "
        "selected. \"-\": the subset's first exit costs more than the budget. cost/B: test mean cost / "
        "budget. How the head costs were obtained is stated per set; see the script's docstring.",
        "",
    ]
    for summary in summaries:
        name = summary["data"]
        part = [row for row in rows if row["data"] == name]
        chosen = ", ".join(_subset(kept) for kept in summary["chosen"])
        lines += [
            f"## {name} (K = {summary['n_exits']})",
            "",
            "Costs (ms, cumulative, every head included): "
            + ", ".join(f"{c:.4g}" for c in summary["costs"])
            + ".  ",
            f"Head costs (ms; {summary['head_costs_how']}): "
            + ", ".join(f"{c:.3g}" for c in summary["head_costs"])
            + " = "
            + ", ".join(
                f"{100 * h / inc:.0f}%"
                for h, inc in zip(summary["head_costs"], np.diff(summary["costs"], prepend=0.0), strict=True)
            )
            + " of each exit's increment.  ",
            f"Selected per seed: {chosen}; with free heads: "
            + (", ".join(_subset(kept) for kept in summary["chosen_free"]) or "not run")
            + f".  Search: {summary['search']}, {summary['n_subsets']} subsets, {summary['n_fits']} fits, "
            f"{summary['select_s']:.1f} s per selection (median; shared CPUs).",
            "",
            "| position | budget (ms) | selected | cost/B | every exit | cost/B | evenly spaced | cost/B "
            "| selected - every (pts) | selected - spaced (pts) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in part:
            lines.append(
                f"| {row['position']:.3f} | {row['budget_ms']:.4g} | {_acc(row['selected_acc'])} "
                f"| {row['selected_cost_ratio']:.3f} | {_acc(row['all_acc'])} | {row['all_cost_ratio']:.3f} "
                f"| {_acc(row['spaced_acc'])} | {row['spaced_cost_ratio']:.3f} "
                f"| {100 * (row['selected_acc'] - row['all_acc']):+.2f} "
                f"| {100 * (row['selected_acc'] - row['spaced_acc']):+.2f} |"
            )
        mean = {key: np.mean([row[key] for row in part]) for key in ("selected_acc", "all_acc", "spaced_acc")}
        lines += [
            f"| mean | | {mean['selected_acc']:.4f} | | {mean['all_acc']:.4f} | | {mean['spaced_acc']:.4f} | "
            f"| {100 * (mean['selected_acc'] - mean['all_acc']):+.2f} "
            f"| {100 * (mean['selected_acc'] - mean['spaced_acc']):+.2f} |",
            "",
            "How many exits (mean test accuracy over the 10 budgets; \"best\" is the best subset of that "
            "size the selection met on `val`, first seed):",
            "",
            "| exits | best subset | val (cross-fitted) | test | evenly spaced | test "
            "| every K/n-th | test |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for entry in summary["by_size"]:
            lines.append(
                f"| {entry['n']} | {_subset(entry['best'])} | {entry['best_val']:.4f} "
                f"| {entry['best_test']:.4f} "
                f"| {_subset(entry['spaced'])} | {entry['spaced_test']:.4f} "
                f"| {_subset(entry['nth'])} | {entry['nth_test']:.4f} |"
            )
        if summary["sweep"]:
            lines += [
                "",
                "If the heads cost more (hypothetical: each head a given share of its exit's increment, "
                "the rest the stage; first seed; mean test accuracy over the 10 budgets):",
                "",
                "| head share | selected | test | every exit | evenly spaced | test "
                "| selected - every (pts) |",
                "|---|---|---|---|---|---|---|",
            ]
            for entry in summary["sweep"]:
                lines.append(
                    f"| {entry['share']:.0%} | {_subset(entry['kept'])} | {entry['selected_test']:.4f} "
                    f"| {entry['all_test']:.4f} | {_subset(entry['spaced'])} | {entry['spaced_test']:.4f} "
                    f"| {100 * (entry['selected_test'] - entry['all_test']):+.2f} |"
                )
        lines.append("")
    return "\n".join(lines)


def write_results(
    rows: list[dict], summaries: list[dict], args, provenance: Provenance, stem: str, missing: list[str]
) -> list[Path]:
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv_path = out_dir / f"{stem}.md", out_dir / f"{stem}.csv"
    text = to_markdown(rows, summaries, args, provenance)
    if missing:
        text += f"\nNot run (no data file when the benchmark ran): {', '.join(missing)}.\n"
    md.write_text(text)
    chosen = {summary["data"]: " ".join(_subset(kept) for kept in summary["chosen"]) for summary in summaries}
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0], "selected_subsets", "command"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "selected_subsets": chosen[row["data"]], "command": provenance.command})
    return [md, csv_path]


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(EXIT_LOGIT_SETS), choices=list(EXIT_LOGIT_SETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--many-exits-seeds", type=int, default=1, help=f"seeds for sets of more than {MANY_EXITS} exits"
    )
    parser.add_argument("--timing-repeats", type=int, default=300)
    parser.add_argument(
        "--shares", type=float, nargs="*", default=[0.25, 0.5, 0.75],
        help=f"hypothetical head shares of each exit's increment to sweep (sets of up to {MANY_EXITS} exits)",
    )
    parser.add_argument("--max-rows", type=int, default=None, help="keep the first rows of val and test")
    parser.add_argument("--quick", action="store_true", help="one small set, one seed: a smoke run")
    parser.add_argument("--out-dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    stem = "exit_selection"
    if args.quick:
        args.sets, args.seeds = QUICK["sets"], QUICK["seeds"]
        args.timing_repeats, args.max_rows = QUICK["timing_repeats"], QUICK["max_rows"]
        args.shares = QUICK["shares"]
        stem = "exit_selection_quick"
    torch.set_num_threads(1)
    provenance = Provenance.start("benchmarks/exit_selection.py", argv)
    rows, summaries, missing = [], [], []
    with warnings.catch_warnings():
        # The cross-fitting halves (2,000 or 5,000 samples) are small for the budget to hold
        # within 2% at some budgets; the test columns report the cost each subset spends.
        warnings.simplefilter("ignore", SmallFittingSetWarning)
        for name in args.sets:
            try:
                set_rows, summary = run_set(name, args)
            except FileNotFoundError:  # a set listed before its file is built
                missing.append(name)
                continue
            rows += set_rows
            summaries.append(summary)
    return write_results(rows, summaries, args, provenance.finish(), stem, missing)


if __name__ == "__main__":
    for path in main(sys.argv[1:]):
        print(path)
