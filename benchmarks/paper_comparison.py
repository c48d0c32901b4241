"""The paper's comparison on every shipped set of real per-exit logits (issue 3, item 5).

Every policy is fitted on the ``val`` split and reported on ``test``; costs are the sets'
measured ``costs_ms``. By default every set but the many-exit ones (``datasets.MANY_EXIT_SETS``,
which ``benchmarks/many_exits.py`` measures; ``--sets`` names any). Budgets are placed by
*position*: ``costs[0] + position * (costs[-1] - costs[0])``. Four parts, each a subcommand
(``all`` runs the four):

- ``curves``: 10 budgets evenly spaced strictly between the first and last exit cost
  (positions k/11): test accuracy and mean cost of EENet (default parameters,
  ``random_state=0``), the five baselines and the oracle; a markdown table and a PNG plot
  per set. Beside it, EENet spending the whole budget (``spend_less=False``, the
  behaviour before it could spend less), fitted in the same run: a second table per set
  compares the two.
- ``ablation``: EENet with each confidence measure alone (max probability, entropy,
  voting; without the class-wise scores) and with the class-wise scores alone, against the
  full default combination, at the same 10 budgets.
- ``robustness``: EENet (``random_state=seed``) and the MSDNet rule fitted on random
  subsets of 10 %, 25 %, 50 % and 100 % of ``val`` (5 seeds), at positions 0.2, 0.5, 0.8:
  median test accuracy and the spread of test cost / budget over the seeds.
- ``fine``: 10 budgets between positions 0.02 and 0.2: EENet, the MSDNet rule, the
  learned-score baseline and the oracle.

Independent fits run in ``--n-jobs`` processes (joblib), torch single-threaded in each;
fits shared by several requested parts run once.

    python benchmarks/paper_comparison.py all               # ~17 min on 2 busy cores; writes
                                                            # benchmarks/results/paper_*.{md,csv,png}
    python benchmarks/paper_comparison.py curves fine       # some parts only
    python benchmarks/paper_comparison.py --quick all       # seconds; writes paper_quick_*
    python benchmarks/paper_comparison.py --render all      # rebuild tables/plots from the CSVs
"""

from __future__ import annotations

import argparse
import csv
import time
import warnings
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from _provenance import LINE_PREFIXES, Provenance, command_line
from joblib import Parallel, delayed
from tqdm import tqdm

from eenet_sklearn._registry import POLICIES, make_policy
from eenet_sklearn.datasets import EXIT_LOGIT_SETS, MANY_EXIT_SETS, load_exit_logits
from eenet_sklearn.metrics import budget_at_position, oracle_accuracy

RESULTS = Path(__file__).parent / "results"
PARTS = ("curves", "ablation", "robustness", "fine")

FULL = {
    "prefix": "paper",
    "curve_positions": [k / 11 for k in range(1, 11)],
    "fine_positions": [float(p) for p in np.linspace(0.02, 0.2, 10)],
    "robust_positions": [0.2, 0.5, 0.8],
    "fractions": [0.1, 0.25, 0.5, 1.0],
    "seeds": [0, 1, 2, 3, 4],
    "n_val": None,
    "max_epochs": None,
}
QUICK = {
    "prefix": "paper_quick",
    "curve_positions": [1 / 3, 2 / 3],
    "fine_positions": [0.02, 0.2],
    "robust_positions": [0.2, 0.8],
    "fractions": [0.1, 1.0],
    "seeds": [0, 1],
    "n_val": 1000,
    "max_epochs": 3,
}

#: EENet variants of the curves part, beside the default: parameters on top of the defaults.
VARIANTS = {"eenet_whole_budget": {"spend_less": False}}
#: Column label of each policy (by its registry name), of the variants and of the oracle.
LABELS = {
    **{name: spec.short_label for name, spec in POLICIES.items()},
    "eenet_whole_budget": "EENet (whole budget)",
    "oracle": "oracle",
}
#: EENet variants of the ablation: parameters on top of the defaults.
ABLATIONS = {
    "eenet": {},
    "eenet_max_prob": {"confidence": ("max_prob",), "class_scores": False},
    "eenet_entropy": {"confidence": ("entropy",), "class_scores": False},
    "eenet_voting": {"confidence": ("voting",), "class_scores": False},
    "eenet_class_scores": {"confidence": (), "class_scores": True},
}
ABLATION_LABELS = {
    "eenet": "full (default)",
    "eenet_max_prob": "max prob only",
    "eenet_entropy": "entropy only",
    "eenet_voting": "voting only",
    "eenet_class_scores": "class scores only",
}
CURVE_POLICIES = ("eenet", "maxprob", "entropy", "patience", "fixed", "learned-score")
FINE_POLICIES = ("eenet", "maxprob", "learned-score")
ROBUST_POLICIES = ("eenet", "maxprob")
#: Test cost / budget above this is flagged in the tables.
OVERSPEND = 1.02


class Fit(NamedTuple):
    """One independent fit: a policy on (a subset of) ``val`` at one budget, scored on ``test``."""

    data: str
    policy: str
    position: float
    fraction: float = 1.0
    seed: int = 0
    n_val: int | None = None
    max_epochs: int | None = None


# --------------------------------------------------------------------------- fitting


def fit_rows(n_rows: int, fit: Fit) -> np.ndarray:
    """Indices of the ``val`` rows a fit uses (sorted; all of them at fraction 1 without ``n_val``)."""
    rows = np.arange(n_rows)
    if fit.n_val is not None and fit.n_val < n_rows:  # --quick: one fixed subset for every fit
        rows = np.sort(np.random.RandomState(0).choice(rows, fit.n_val, replace=False))
    if fit.fraction < 1.0:
        size = round(fit.fraction * len(rows))
        rows = np.sort(np.random.RandomState(fit.seed).choice(rows, size, replace=False))
    return rows


def build_policy(fit: Fit, costs: np.ndarray, budget: float, n_classes: int):
    # classes given: a small random subset of val may miss a class.
    common = {"costs": costs, "budget": budget, "classes": np.arange(n_classes)}
    if fit.policy in ABLATIONS or fit.policy in VARIANTS:
        params = dict(ABLATIONS.get(fit.policy, VARIANTS.get(fit.policy, {})))
        if fit.max_epochs is not None:
            params["max_epochs"] = fit.max_epochs
        return make_policy("eenet", **common, random_state=fit.seed, **params)
    return make_policy(fit.policy, **common)


def run_fit(fit: Fit) -> tuple[Fit, dict]:
    """Fit one policy and measure it on ``test`` (runs in a joblib worker)."""
    torch.set_num_threads(1)
    data = load_exit_logits(fit.data)
    budget = budget_at_position(data.costs, fit.position)
    rows = fit_rows(len(data.val_labels), fit)
    policy = build_policy(fit, data.costs, budget, data.val_logits.shape[2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        policy.fit(data.val_logits[rows], data.val_labels[rows])
        fit_s = time.perf_counter() - start
    exits = policy.predict_exit(data.test_logits)
    mean_cost = float(data.costs[exits].mean())
    target = getattr(policy, "target_cost_", None)
    return fit, {
        "budget": budget,
        "target_ratio": float("nan") if target is None else target / budget,
        "n_fit": len(rows),
        "accuracy": float(policy.score(data.test_logits, data.test_labels)),
        "mean_cost": mean_cost,
        "cost_ratio": mean_cost / budget,
        "exit_fractions": np.bincount(exits, minlength=len(data.costs)) / len(exits),
        "fit_s": fit_s,
        "warnings": " | ".join(sorted({str(w.message) for w in caught})),
    }


def run_fits(fits: Sequence[Fit], n_jobs: int, quiet: bool) -> dict[Fit, dict]:
    """Run every fit once, the slowest first, in ``n_jobs`` processes."""
    unique = list(dict.fromkeys(fits))

    def weight(fit: Fit) -> float:  # a rough guess of the fit time, to start the slow ones first
        size = (fit.n_val or 10_000) * fit.fraction
        return size * (100.0 if fit.policy in ABLATIONS or fit.policy in VARIANTS else 1.0)

    unique.sort(key=weight, reverse=True)
    jobs = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(delayed(run_fit)(f) for f in unique)
    return dict(tqdm(jobs, total=len(unique), desc="fits", disable=quiet))


def oracle_row(name: str, position: float) -> dict:
    data = load_exit_logits(name)
    budget = budget_at_position(data.costs, position)
    accuracy, exits = oracle_accuracy(
        data.test_logits, data.test_labels, data.costs, budget, return_exits=True
    )
    mean_cost = float(data.costs[exits].mean())
    return {
        "budget": budget,
        "target_ratio": float("nan"),
        "n_fit": 0,
        "accuracy": float(accuracy),
        "mean_cost": mean_cost,
        "cost_ratio": mean_cost / budget,
        "exit_fractions": np.bincount(exits, minlength=len(data.costs)) / len(exits),
        "fit_s": 0.0,
        "warnings": "",
    }


# --------------------------------------------------------------------------- the parts


def part_fits(part: str, config: dict, sets: Sequence[str]) -> list[Fit]:
    """The fits a part needs."""
    common = {"n_val": config["n_val"], "max_epochs": config["max_epochs"]}
    if part == "curves":
        grid = [(p, pos) for p in (*CURVE_POLICIES, *VARIANTS) for pos in config["curve_positions"]]
    elif part == "ablation":
        grid = [(p, pos) for p in ABLATIONS for pos in config["curve_positions"]]
    elif part == "fine":
        grid = [(p, pos) for p in FINE_POLICIES for pos in config["fine_positions"]]
    else:
        return [
            Fit(name, policy, pos, fraction, seed, **common)
            for name in sets
            for policy in ROBUST_POLICIES
            for pos in config["robust_positions"]
            for fraction in config["fractions"]
            for seed in config["seeds"]
        ]
    # EENet at random_state=0; the other policies ignore the seed.
    return [Fit(name, policy, pos, 1.0, 0, **common) for name in sets for policy, pos in grid]


def tidy_rows(part: str, fits: Iterable[Fit], results: dict[Fit, dict]) -> list[dict]:
    """One CSV row per fit (and per oracle budget for the parts that have one)."""
    rows = []
    seen_oracle = set()
    for fit in fits:
        entries = [(fit.policy, results[fit])]
        if part in ("curves", "fine") and (fit.data, fit.position) not in seen_oracle:
            seen_oracle.add((fit.data, fit.position))
            entries.append(("oracle", oracle_row(fit.data, fit.position)))
        for policy, result in entries:
            rows.append(
                {
                    "part": part,
                    "data": fit.data,
                    "policy": policy,
                    "position": round(fit.position, 6),
                    "budget_ms": result["budget"],
                    "fraction": fit.fraction,
                    "seed": fit.seed if policy != "oracle" else "",
                    "n_fit": result["n_fit"],
                    "accuracy": result["accuracy"],
                    "mean_cost_ms": result["mean_cost"],
                    "cost_ratio": result["cost_ratio"],
                    "target_ratio": result["target_ratio"],
                    "exit_fractions": " ".join(f"{f:.4f}" for f in result["exit_fractions"]),
                    "fit_s": round(result["fit_s"], 3),
                    "warnings": result["warnings"],
                }
            )
    # Oracle rows after the policies of their set, for a readable file.
    return sorted(rows, key=lambda r: (r["data"], r["policy"] == "oracle"))


def by_key(rows: list[dict]) -> dict[tuple, dict]:
    return {(r["data"], r["policy"], r["position"], r["fraction"], r["seed"]): r for r in rows}


def extra_use(row: dict, first_cost: float) -> float:
    """Share of the budget above the first exit's cost that a policy spends on test.

    At tight budgets cost / budget hides overspending: at 2 % of the way from the first
    exit's cost, spending 1.02 x budget is using twice the allowance above ``costs[0]``.
    """
    return (row["mean_cost_ms"] - first_cost) / (row["budget_ms"] - first_cost)


def pts(value: float) -> str:
    return f"{100 * value:+.2f}"


def cost_cell(ratio: float) -> str:
    return f"{ratio:.3f}" + (" (over)" if ratio > OVERSPEND else "")


def comparison_tables(
    rows: list[dict], policies: Sequence[str], positions: Sequence[float], sets: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Markdown tables (one per set) of accuracy and cost / budget, and their findings."""
    table = by_key(rows)
    lines, findings = [], []
    for name in sets:
        first_cost = float(load_exit_logits(name).costs[0])
        header = ["budget (ms)", "pos"]
        for policy in policies:
            header += [f"{LABELS[policy]} acc", f"{LABELS[policy]} cost/B"]
        header += ["oracle acc", "most accurate policy", "EENet - best (pts)", "gap closed"]
        lines += [f"### {name}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        losses, shares, vs_msdnet, vs_learned, eenet_ratios = [], [], [], [], []
        for position in positions:
            pos = round(position, 6)
            cells = {p: table[(name, p, pos, 1.0, 0)] for p in policies}
            oracle = table[(name, "oracle", pos, 1.0, "")]
            acc = {p: cells[p]["accuracy"] for p in policies}
            best_acc = max(acc.values())
            winners = [p for p in policies if acc[p] == best_acc]
            eenet = acc["eenet"]
            gap = eenet - best_acc
            share = (eenet - acc["maxprob"]) / (oracle["accuracy"] - acc["maxprob"])
            shares.append(share)
            vs_msdnet.append(eenet - acc["maxprob"])
            if "learned-score" in acc:
                vs_learned.append(eenet - acc["learned-score"])
            eenet_ratios.append(cells["eenet"]["cost_ratio"])
            if gap < 0:
                best = max((p for p in policies if p != "eenet"), key=lambda p: acc[p])
                verdict = f"**{LABELS[best]}: EENet NOT most accurate**"
                use = {p: extra_use(cells[p], first_cost) for p in ("eenet", best)}
                losses.append((pos, cells["eenet"]["budget_ms"], best, -gap, cells[best]["cost_ratio"], use))
            elif len(winners) > 1:
                verdict = "EENet (tie with " + ", ".join(LABELS[p] for p in winners if p != "eenet") + ")"
            else:
                verdict = "EENet"
            row = [f"{cells['eenet']['budget_ms']:.4f}", f"{pos:.3f}"]
            for policy in policies:
                row += [f"{acc[policy]:.4f}", cost_cell(cells[policy]["cost_ratio"])]
            row += [f"{oracle['accuracy']:.4f}", verdict, pts(gap), f"{share:.0%}"]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        n = len(positions)
        text = [
            f"- **{name}**: EENet is the most accurate policy (ties included) at "
            f"{n - len(losses)} of {n} budgets."
        ]
        if losses:
            text.append(
                " It is **not** at "
                + "; ".join(
                    f"position {pos:.3f} ({budget:.4f} ms): {LABELS[best]} is {100 * d:.2f} points ahead"
                    + (f" (spending {ratio:.3f} x budget)" if ratio > OVERSPEND else "")
                    + f"; of the budget above the first exit's cost, EENet spends {use['eenet']:.0%} "
                    f"on test, {LABELS[best]} {use[best]:.0%}"
                    for pos, budget, best, d, ratio, use in losses
                )
                + f" (mean loss where it loses: {100 * np.mean([x[3] for x in losses]):.2f} points)."
            )
        text.append(
            f" EENet minus MSDNet: mean {pts(np.mean(vs_msdnet))} points "
            f"(range {pts(min(vs_msdnet))} to {pts(max(vs_msdnet))})"
        )
        if vs_learned:
            text.append(f"; minus LearnedScore: mean {pts(np.mean(vs_learned))} points")
        text.append(
            f". Share of the MSDNet-to-oracle gap EENet closes: mean {np.mean(shares):.1%} "
            f"(per budget: {', '.join(f'{s:.0%}' for s in shares)}). "
            f"EENet test cost / budget from {min(eenet_ratios):.3f} to {max(eenet_ratios):.3f}."
        )
        findings.append("".join(text))
    return lines, findings


def best_exit_accuracy(name: str, budget: float) -> float:
    """Test accuracy of the most accurate single exit whose cost is within ``budget``."""
    data = load_exit_logits(name)
    accuracy = (data.test_logits.argmax(axis=2) == data.test_labels[:, None]).mean(axis=0)
    return float(accuracy[data.costs <= budget].max())


#: The largest loss, in accuracy, of EENet's default against spending the whole budget
#: that the comparison accepts (issue 10).
WHOLE_BUDGET_TOLERANCE = 0.001


def whole_budget_tables(
    rows: list[dict], positions: Sequence[float], sets: Sequence[str]
) -> tuple[list[str], list[str]]:
    """EENet's default (may spend less) against EENet spending the whole budget, per set."""
    table = by_key(rows)
    lines, findings = [], []
    for name in sets:
        header = [
            "budget (ms)", "pos", "EENet acc", "EENet cost/B", "EENet target/B",
            "whole budget acc", "whole budget cost/B", "difference (pts)",
            "best single exit acc", "PABEE acc",
        ]
        lines += [f"### {name}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        diffs, behind = [], []
        for position in positions:
            pos = round(position, 6)
            new = table[(name, "eenet", pos, 1.0, 0)]
            old = table[(name, "eenet_whole_budget", pos, 1.0, 0)]
            pabee = table[(name, "patience", pos, 1.0, 0)]["accuracy"]
            single = best_exit_accuracy(name, new["budget_ms"])
            diff = new["accuracy"] - old["accuracy"]
            diffs.append(diff)
            if new["accuracy"] < max(single, pabee):
                behind.append(f"{pos:.3f}")
            lines.append(
                "| " + " | ".join([
                    f"{new['budget_ms']:.4f}", f"{pos:.3f}", f"{new['accuracy']:.4f}",
                    cost_cell(new["cost_ratio"]), f"{new['target_ratio']:.3f}", f"{old['accuracy']:.4f}",
                    cost_cell(old["cost_ratio"]), pts(diff), f"{single:.4f}", f"{pabee:.4f}",
                ]) + " |"
            )
        lines.append("")
        losses = [
            f"{positions[i]:.3f} ({pts(d)})" for i, d in enumerate(diffs) if d < -WHOLE_BUDGET_TOLERANCE
        ]
        chosen = sum(
            table[(name, "eenet", round(p, 6), 1.0, 0)]["target_ratio"] < 1.0 for p in positions
        )
        findings.append(
            f"- **{name}**: EENet spends less than the budget on val at {chosen} of {len(positions)} "
            f"budgets. Default minus whole budget: mean {pts(np.mean(diffs))} points (range "
            f"{pts(min(diffs))} to {pts(max(diffs))}); budgets where the default loses more than "
            f"{100 * WHOLE_BUDGET_TOLERANCE:.1f} point: "
            + (", ".join(losses) if losses else "none")
            + ". Budgets where EENet is below the best single exit within the budget or PABEE: "
            + (", ".join(behind) if behind else "none")
            + "."
        )
    return lines, findings


def ablation_tables(
    rows: list[dict], positions: Sequence[float], sets: Sequence[str]
) -> tuple[list[str], list[str]]:
    table = by_key(rows)
    variants = list(ABLATIONS)
    lines, findings = [], []
    for name in sets:
        header = ["budget (ms)", "pos"] + [ABLATION_LABELS[v] for v in variants] + ["best variant"]
        lines += [f"### {name}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        diffs = {v: [] for v in variants}
        wins = {v: 0 for v in variants}
        over = []
        for position in positions:
            pos = round(position, 6)
            cells = {v: table[(name, v, pos, 1.0, 0)] for v in variants}
            acc = {v: cells[v]["accuracy"] for v in variants}
            best = max(acc.values())
            for v in variants:
                diffs[v].append(acc[v] - acc["eenet"])
                wins[v] += acc[v] == best
                if cells[v]["cost_ratio"] > OVERSPEND:
                    over.append((ABLATION_LABELS[v], pos, cells[v]["cost_ratio"]))
            row = [f"{cells['eenet']['budget_ms']:.4f}", f"{pos:.3f}", f"{acc['eenet']:.4f}"]
            row += [f"{acc[v]:.4f} ({pts(acc[v] - acc['eenet'])})" for v in variants[1:]]
            row.append(", ".join(ABLATION_LABELS[v] for v in variants if acc[v] == best))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        n = len(positions)
        parts = [
            f"{ABLATION_LABELS[v]} {pts(np.mean(diffs[v]))} (range {pts(min(diffs[v]))} to "
            f"{pts(max(diffs[v]))}; best or tied at {wins[v]} of {n})"
            for v in variants[1:]
        ]
        text = (
            f"- **{name}**: the full combination is the best or tied variant at {wins['eenet']} of {n} "
            f"budgets. Mean accuracy of each single-measure variant minus the full one, in points: "
            + "; ".join(parts)
            + "."
        )
        if over:
            text += (
                " Test cost above "
                + f"{OVERSPEND} x budget: "
                + ", ".join(f"{label} at {pos:.3f} ({ratio:.3f})" for label, pos, ratio in over)
                + "."
            )
        findings.append(text)
    return lines, findings


def robustness_tables(rows: list[dict], config: dict, sets: Sequence[str]) -> tuple[list[str], list[str]]:
    lines, findings = [], []
    seeds = config["seeds"]
    for name in sets:
        header = ["val fraction", "fit rows", "pos", "budget (ms)"]
        for policy in ROBUST_POLICIES:
            label = LABELS[policy]
            header += [
                f"{label} acc median [min, max]",
                f"{label} cost/B median [min, max]",
                f"{label} cost/B std",
            ]
        header.append("EENet - MSDNet (pts, medians)")
        lines += [f"### {name}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        summary = []
        for fraction in config["fractions"]:
            diffs, ratios, stds = [], [], []
            for position in config["robust_positions"]:
                pos = round(position, 6)
                cells = {
                    p: [
                        r
                        for r in rows
                        if r["data"] == name
                        and r["policy"] == p
                        and r["position"] == pos
                        and r["fraction"] == fraction
                    ]
                    for p in ROBUST_POLICIES
                }
                assert all(len(c) == len(seeds) for c in cells.values())
                row = [
                    f"{fraction:.0%}",
                    str(cells["eenet"][0]["n_fit"]),
                    f"{pos:.2f}",
                    f"{cells['eenet'][0]['budget_ms']:.4f}",
                ]
                medians = {}
                for policy in ROBUST_POLICIES:
                    acc = np.array([r["accuracy"] for r in cells[policy]])
                    ratio = np.array([r["cost_ratio"] for r in cells[policy]])
                    std = float(ratio.std(ddof=1)) if len(ratio) > 1 else 0.0
                    medians[policy] = float(np.median(acc))
                    row += [
                        f"{np.median(acc):.4f} [{acc.min():.4f}, {acc.max():.4f}]",
                        f"{np.median(ratio):.3f} [{ratio.min():.3f}, {ratio.max():.3f}]",
                        f"{std:.4f}",
                    ]
                    if policy == "eenet":
                        ratios.extend(ratio)
                        stds.append(std)
                diff = medians["eenet"] - medians["maxprob"]
                diffs.append(diff)
                row.append(pts(diff))
                lines.append("| " + " | ".join(row) + " |")
            summary.append(
                f"{fraction:.0%} of val: EENet - MSDNet {pts(np.mean(diffs))} points on average "
                f"(ahead at {sum(d > 0 for d in diffs)} of {len(diffs)} budgets), EENet cost/B "
                f"{min(ratios):.3f}-{max(ratios):.3f}, largest std {max(stds):.4f}"
            )
        lines.append("")
        findings.append(f"- **{name}**: " + "; ".join(summary) + ".")
    return lines, findings


# --------------------------------------------------------------------------- output


#: The lines of a markdown file's header that describe the run which made it.
RUN_LINES = (*LINE_PREFIXES, "Re-rendered")
#: A markdown section kept as it is when the file is re-rendered with --render.
KEPT_SECTION = "## Notes"


def run_lines(provenance: Provenance, run_info: dict) -> list[str]:
    """The header lines describing a run: command, date, machine, versions, runtime."""
    return provenance.lines(
        machine_note=f", {run_info['n_jobs']} joblib process(es), torch single-threaded in each",
        runtime_note=f" for the whole run (parts {', '.join(run_info['parts'])}, fits shared between "
        f"parts run once); this part's fits took {run_info['fit_s'] / 60:.1f} min of CPU in total",
    )


def header(title: str, run_header: Sequence[str], config: dict, extra: Sequence[str]) -> list[str]:
    lines = [f"# {title}", "", *run_header, ""]
    if config["prefix"] == "paper_quick":
        lines += [
            f"**Quick mode (smoke test): {config['n_val']} val rows, EENet max_epochs="
            f"{config['max_epochs']}, {len(config['curve_positions'])} budgets, "
            f"{len(config['seeds'])} seeds: not the benchmark.**",
            "",
        ]
    return lines + list(extra) + [""]


COMMON_NOTES = [
    "Fitted on `val` (all of it unless stated: 10,000 rows for fashion_cnn4 and mnist_mlp3, 4,000 "
    "for reviews_minilm6), reported on `test` (10,000 rows; 4,000 for reviews_minilm6); "
    "costs in ms (`costs_ms`). "
    "Budget B = costs[0] + pos x (costs[-1] - costs[0]). Policies: EENet = `EarlyExitPolicy` "
    "(default parameters, `random_state=0`); MSDNet = `MaxProbPolicy`; BranchyNet = `EntropyPolicy`; "
    "PABEE = `PatiencePolicy`; Fixed = `FixedExitPolicy`; LearnedScore = `LearnedScorePolicy` "
    "(logistic regression); oracle = `metrics.oracle_accuracy` on test (an upper bound, not a policy).",
    "",
    "acc: test accuracy; cost/B: test mean cost / budget, marked (over) above "
    f"{OVERSPEND}. Most accurate policy: the highest test accuracy among the policies (not the "
    "oracle), whatever its cost; EENet - best: EENet's accuracy minus that, in points (0 when "
    "EENet is the most accurate). Gap closed: (EENet - MSDNet) / (oracle - MSDNet), the share of "
    "the gap between the MSDNet rule and the oracle that EENet closes (negative when EENet is "
    "below the rule).",
]


WHOLE_BUDGET_NOTES = [
    "EENet: the default (`spend_less=True`: it may spend less than the budget where that is "
    "clearly more accurate on val); whole budget: `spend_less=False` (the behaviour before, the "
    "paper's), same seed, same run. target/B: the mean cost the default chose to spend on val "
    "(`target_cost_`) over the budget. Difference: default minus whole budget, test accuracy "
    "points. Best single exit: the most accurate exit on test among those within the budget "
    "(chosen on test itself, so a bound for `FixedExitPolicy`); PABEE: `PatiencePolicy`.",
]


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_curves(path: Path, rows: list[dict], name: str, policies: Sequence[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eenet_sklearn.plotting import BudgetCurveDisplay

    curve = [
        {**r, "policy": LABELS[r["policy"]], "budget": r["budget_ms"], "mean_cost": r["mean_cost_ms"]}
        for r in rows
        if r["data"] == name and r["policy"] in (*policies, "oracle")
    ]
    figure, axes = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    oracle_kw = {"marker": "x"}  # the oracle often saturates: its points may coincide
    BudgetCurveDisplay.from_predictions(curve, ax=axes[0], x="budget", oracle_kw=oracle_kw, markersize=4)
    BudgetCurveDisplay.from_predictions(curve, ax=axes[1], x="mean_cost", oracle_kw=oracle_kw, markersize=4)
    axes[0].set_xlabel("Budget (ms per sample)")
    axes[1].set_xlabel("Measured mean cost on test (ms per sample)")
    for ax in axes:
        ax.grid(alpha=0.3)
    figure.suptitle(f"{name}: {title} (fit on val, test accuracy)")
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_part(
    part: str,
    rows: list[dict],
    config: dict,
    sets: Sequence[str],
    out_dir: Path,
    run_header: Sequence[str],
    kept: Sequence[str] = (),
) -> list[Path]:
    """Write a part's markdown file and plots (and its CSV, unless ``kept``-style re-rendering)."""
    prefix = out_dir / f"{config['prefix']}_{part}"
    written = []
    if part in ("curves", "fine"):
        title, policies, positions, caption = {
            "curves": (
                "EENet, five baselines and the oracle at 10 budgets",
                CURVE_POLICIES,
                config["curve_positions"],
                "EENet vs baselines",
            ),
            "fine": (
                "Fine budget sweep at the tightest budgets (positions 0.02 to 0.2)",
                FINE_POLICIES,
                config["fine_positions"],
                "tightest budgets",
            ),
        }[part]
        tables, findings = comparison_tables(rows, policies, positions, sets)
        if part == "curves" and any(row["policy"] in VARIANTS for row in rows):
            whole, whole_findings = whole_budget_tables(rows, positions, sets)
            heading = "## EENet against EENet spending the whole budget"
            tables += [heading, "", *WHOLE_BUDGET_NOTES, "", *whole]
            findings += whole_findings
        notes = COMMON_NOTES
        for name in sets:
            png = out_dir / f"{config['prefix']}_{part}_{name}.png"
            plotted = (*policies, *VARIANTS) if part == "curves" else policies
            plot_curves(png, rows, name, plotted, caption)
            written.append(png)
    elif part == "ablation":
        title = "Ablation: EENet with one confidence measure against the full combination"
        tables, findings = ablation_tables(rows, config["curve_positions"], sets)
        notes = [
            COMMON_NOTES[0],
            "",
            "Test accuracy of `EarlyExitPolicy` (defaults, `random_state=0`) with: full (default) "
            '`confidence=("max_prob", "entropy", "voting"), class_scores=True`; max prob / '
            "entropy / voting only: `confidence=(name,), class_scores=False`; class scores only: "
            "`confidence=(), class_scores=True`. In brackets: points against the full combination. "
            "Test cost / budget of every variant is in the CSV (`cost_ratio`).",
        ]
    else:
        title = "Robustness of the thresholds to the fitting set"
        tables, findings = robustness_tables(rows, config, sets)
        notes = [
            COMMON_NOTES[0],
            "",
            f"Each policy is fitted on a random subset of `val` (fraction given; seeds {config['seeds']}, "
            "the seed draws the subset and is EENet's `random_state`; 100 % is the whole of `val`, so "
            "the MSDNet rule is the same for every seed there). Median test accuracy with [min, max] "
            "over the seeds; test cost / budget: median [min, max] and standard deviation (ddof=1) "
            "over the seeds.",
        ]
    lines = header(title, run_header, config, notes)
    lines += ["## Results", "", *tables, "## Findings", "", *findings, "", *kept]
    md = prefix.with_suffix(".md")
    md.write_text("\n".join(lines).rstrip("\n") + "\n")
    return [md, *written]


def read_csv(path: Path) -> list[dict]:
    """Rows of a part's CSV, with the types :func:`tidy_rows` gave them."""
    floats = ("position", "budget_ms", "fraction", "accuracy", "mean_cost_ms", "cost_ratio", "fit_s")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key in floats:
            row[key] = float(row[key])
        row["target_ratio"] = float(row.get("target_ratio", "nan"))  # absent before spend_less
        row["n_fit"] = int(row["n_fit"])
        row["seed"] = int(row["seed"]) if row["seed"] != "" else ""
    return rows


def render(part: str, config: dict, out_dir: Path, command: str) -> list[Path]:
    """Rebuild a part's markdown and plots from its CSV, keeping the run lines and the notes."""
    prefix = out_dir / f"{config['prefix']}_{part}"
    rows = read_csv(prefix.with_suffix(".csv"))
    old = prefix.with_suffix(".md").read_text().splitlines()
    run_header = [line.rstrip() + "  " for line in old if line.startswith(RUN_LINES[:-1])]
    run_header.append(
        f"Re-rendered from the CSV on {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} by `{command}`."
    )
    kept = old[old.index(KEPT_SECTION) :] if KEPT_SECTION in old else []
    sets = [name for name in EXIT_LOGIT_SETS if any(row["data"] == name for row in rows)]
    return write_part(part, rows, config, sets, out_dir, run_header, kept)


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="+", choices=[*PARTS, "all"], help="which parts to run")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 2 budgets, 2 seeds, 1000 val rows, max_epochs=3; writes paper_quick_*",
    )
    parser.add_argument(
        "--sets", nargs="+", choices=EXIT_LOGIT_SETS,
        default=[name for name in EXIT_LOGIT_SETS if name not in MANY_EXIT_SETS],
        help="default: every shipped set but the many-exit ones (benchmarks/many_exits.py covers those)",
    )
    parser.add_argument("--n-jobs", type=int, default=2, help="joblib processes (default 2)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument(
        "--render",
        action="store_true",
        help="refit nothing: rebuild the markdown tables, findings and plots from the CSVs of an "
        f"earlier run, keeping its run lines and any '{KEPT_SECTION}' section",
    )
    args = parser.parse_args(argv)
    parts = list(PARTS) if "all" in args.parts else list(dict.fromkeys(args.parts))
    config = QUICK if args.quick else FULL
    if args.render:
        command = command_line("benchmarks/paper_comparison.py", argv)
        return [path for part in parts for path in render(part, config, args.out_dir, command)]

    provenance = Provenance.start("benchmarks/paper_comparison.py", argv)
    fits = {part: part_fits(part, config, args.sets) for part in parts}
    results = run_fits([f for part in parts for f in fits[part]], args.n_jobs, args.quiet)
    provenance.finish()
    run_info = {"n_jobs": args.n_jobs, "parts": parts}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for part in parts:
        rows = tidy_rows(part, fits[part], results)
        csv_path = args.out_dir / f"{config['prefix']}_{part}.csv"
        write_csv(csv_path, rows)
        info = {**run_info, "fit_s": sum(r["fit_s"] for r in rows)}
        written += [
            csv_path,
            *write_part(part, rows, config, args.sets, args.out_dir, run_lines(provenance, info)),
        ]
    if not args.quiet:
        print(f"{provenance.wall_s / 60:.1f} min; wrote:", *map(str, written), sep="\n  ")
    return written


if __name__ == "__main__":
    main()
