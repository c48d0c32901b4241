"""Is the certified risk valid, and how much cost does it save? Learn-then-Test over many splits.

For each shipped set of real per-exit logits (``fashion_cnn4``: a 4-exit CNN on
Fashion-MNIST; ``mnist_mlp3``: a 3-exit MLP on MNIST; ``reviews_minilm6``: the MiniLM-L6
encoder with an exit per layer on movie reviews; the many-exit sets only when ``--sets`` names
them), the policies are fitted once on the
validation logits, and each policy's path of operating points is traced there, as
:class:`eenet_sklearn.RiskControlledPolicy` does on its fitting part:

- ``eenet``: EENet's scores with its own quotas (``path="quotas"``);
- ``eenet-shared``: EENet's scores (the scorer's probability that an exit is right) with one
  threshold shared by every exit but the last (``path="shared"``);
- ``maxprob-quotas``: the max-probability score with MSDNet's geometric quotas;
- ``maxprob-shared``: one max-probability threshold shared by every exit but the last
  (``path="shared"``), the anchor of "Fast yet Safe" (Jazbec et al., NeurIPS 2024).

Then, ``--splits`` times, a calibration set of half the test logits' size is drawn, and
for each ``epsilon`` (``--epsilons``, in accuracy points) the cheapest point certified by
Learn-then-Test (exact binomial p-values, fixed-sequence testing from
everything-at-the-last-exit, ``delta = --delta``) is chosen on it; its risk
("accuracy_gap": the share of samples the last exit gets right and the chosen exit
wrong) and mean cost are measured as below. Two
designs: (i.i.d.) each calibration set is ``n`` draws with replacement from the test
logits (the pool), so that the pool is the population the guarantee speaks of, and the
chosen point's risk and cost are those on the pool; (halves) the pool split into a
calibration half and a test half, as "Fast yet Safe" reports it. The table gives the
fraction of splits whose chosen point's risk exceeds epsilon (the guarantee bounds the
i.i.d. one by delta, up to the binomial error of the splits, about
``sqrt(delta (1 - delta) / 500)``), the mean risk and the mean share of the last exit's
cost saved.

The per-split work reuses the class's own pieces (``_trace_path``, ``_point_losses``,
``binomial_p_values``, ``_fixed_sequence``), vectorised over splits, so 500 splits take
seconds; the scorer is trained once per set, not per split.

    python benchmarks/risk_control.py            # about 3-6 min on 2 shared cores
    python benchmarks/risk_control.py --quick    # tiny sizes, under a minute; writes risk_control_quick.*
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from _provenance import Provenance

from eenet_sklearn import EarlyExitPolicy, MaxProbPolicy
from eenet_sklearn._features import exit_predictions
from eenet_sklearn._risk_control import _fixed_sequence, _point_losses, _trace_path, binomial_p_values
from eenet_sklearn.base import BaseExitPolicy
from eenet_sklearn.datasets import EXIT_LOGIT_SETS, MANY_EXIT_SETS, load_exit_logits

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = {
    "eenet": ("EENet scores, own quotas", "quotas"),
    "eenet-shared": ("EENet scores, one shared threshold", "shared"),
    "maxprob-quotas": ("max-prob, MSDNet quotas", "quotas"),
    "maxprob-shared": ("max-prob, one shared threshold (Fast yet Safe)", "shared"),
}
QUICK = {"splits": 40, "sets": ["mnist_mlp3"], "max_epochs": 5, "n_points": 30}


def make_policy(method: str, costs: np.ndarray, max_epochs: int, seed: int):
    """The unfitted policy behind a method, fitted (as RiskControlledPolicy does) at mid-cost."""
    budget = float(costs[0] + costs[-1]) / 2
    if method == "eenet":
        return EarlyExitPolicy(
            costs=costs, budget=budget, max_epochs=max_epochs, random_state=seed, device="cpu"
        )
    return MaxProbPolicy(costs=costs, budget=budget)


def certify(counts: np.ndarray, n_cal: int, epsilon: float, delta: float) -> np.ndarray:
    """The point Learn-then-Test chooses on each split, from loss counts ``(n_splits, n_points + 1)``."""
    p_values = binomial_p_values(counts, n_cal, epsilon)
    p_values[:, 0] = 0.0  # everything at the last exit: risk 0 by definition, as in fit
    return np.array([_fixed_sequence(row, delta) - 1 for row in p_values])


def run_set(name: str, args: argparse.Namespace, rng: np.random.Generator) -> list[dict]:
    data = load_exit_logits(name)
    costs = np.asarray(data.costs, dtype=np.float64)
    pool, labels = data.test_logits, data.test_labels
    n_pool = len(pool)
    n_cal = n_pool // 2
    # i.i.d. draws: each split's calibration set is n_cal draws with replacement from the
    # pool, so the pool is exactly the population the guarantee speaks of (counts per row).
    draws = np.stack(
        [np.bincount(rng.integers(0, n_pool, n_cal), minlength=n_pool) for _ in range(args.splits)]
    ).astype(np.float32)
    # Halves: the pool split into a calibration half and a test half (as "Fast yet Safe" does).
    halves = np.zeros((args.splits, n_pool), dtype=np.float32)
    for s in range(args.splits):
        halves[s, rng.permutation(n_pool)[:n_cal]] = 1.0
    predictions = exit_predictions(pool)
    rows = []
    fitted: dict[str, BaseExitPolicy] = {}
    for method, (label, path) in METHODS.items():
        kind = method.split("-")[0]  # one fit per scorer: eenet, maxprob
        if kind not in fitted:
            fitted[kind] = make_policy(kind, costs, args.max_epochs, args.seed).fit(
                data.val_logits, data.val_labels
            )
        policy = fitted[kind]
        thresholds, _ = _trace_path(policy, policy.exit_scores(data.val_logits), path, args.n_points)
        losses, exits = _point_losses(policy.exit_scores(pool), predictions, labels, thresholds)
        losses = losses.astype(np.float32)
        spent = costs[exits].astype(np.float32)
        pool_risk, pool_cost = losses.mean(axis=1), spent.mean(axis=1)
        iid_counts = np.rint(draws @ losses.T).astype(np.int64)
        half_counts = np.rint(halves @ losses.T).astype(np.int64)
        test_risk = ((1.0 - halves) @ losses.T) / (n_pool - n_cal)
        test_cost = ((1.0 - halves) @ spent.T) / (n_pool - n_cal)
        for epsilon in args.epsilons:
            point = certify(iid_counts, n_cal, epsilon / 100, args.delta)
            risk, saved = pool_risk[point], 1.0 - pool_cost[point] / costs[-1]
            half_point = certify(half_counts, n_cal, epsilon / 100, args.delta)
            chosen = np.arange(args.splits), half_point
            half_risk, half_saved = test_risk[chosen], 1.0 - test_cost[chosen] / costs[-1]
            rows.append({
                "data": name,
                "method": method,
                "label": label,
                "epsilon_points": epsilon,
                "delta": args.delta,
                "splits": args.splits,
                "n_calibration": n_cal,
                "violation_rate": float(np.mean(risk > epsilon / 100)),
                "mean_risk_points": float(100 * risk.mean()),
                "cost_saved_pct": float(100 * saved.mean()),
                "cost_saved_pct_sd": float(100 * saved.std()),
                "certified_rate": float(np.mean(point > 0)),
                "halves_test_violation_rate": float(np.mean(half_risk > epsilon / 100)),
                "halves_cost_saved_pct": float(100 * half_saved.mean()),
            })
    return rows


def findings(rows: list[dict], delta: float, splits: int) -> list[str]:
    allowed = delta + 2 * np.sqrt(delta * (1 - delta) / splits)
    worst = max(rows, key=lambda r: r["violation_rate"])
    lines = [
        f"- Validity: the highest violation rate is {worst['violation_rate']:.3f} "
        f"({worst['data']}, {worst['method']}, epsilon {worst['epsilon_points']:g} points); "
        f"delta plus two binomial standard errors of {splits} splits is {allowed:.3f}: "
        + ("every cell is within it." if worst["violation_rate"] <= allowed else "some cells exceed it.")
    ]
    half = max(rows, key=lambda r: r["halves_test_violation_rate"])
    lines.append(
        f"- Halves: the highest test-half violation rate is {half['halves_test_violation_rate']:.3f} "
        f"({half['data']}, {half['method']}, epsilon {half['epsilon_points']:g} points). Not what the "
        "guarantee covers: the test half's own sampling noise adds to it, and two halves of one "
        "finite pool move in opposite directions (a calibration half that looks lucky leaves an "
        "unlucky test half)."
    )
    lines.append(
        "- Cost saved, EENet against the anchor: each policy is fitted once per set (EENet's scorer "
        "with one seed), so a difference of a point or less may not survive another seed; the sd "
        "column is the spread over calibration draws, not over scorer fits."
    )
    for name in dict.fromkeys(r["data"] for r in rows):
        for epsilon in dict.fromkeys(r["epsilon_points"] for r in rows):
            cell = {r["method"]: r for r in rows if r["data"] == name and r["epsilon_points"] == epsilon}
            eenet, anchor = cell["eenet"]["cost_saved_pct"], cell["maxprob-shared"]["cost_saved_pct"]
            scores_shared = cell["eenet-shared"]["cost_saved_pct"]
            shared = f"; EENet's scores with one shared threshold: {scores_shared:.1f}%"
            if eenet <= anchor:
                lines.append(
                    f"- {name}, epsilon {epsilon:g} points: EENet does NOT save more than the shared "
                    f"max-prob threshold ({eenet:.1f}% vs {anchor:.1f}% of the last exit's cost{shared})."
                )
            else:
                lines.append(
                    f"- {name}, epsilon {epsilon:g} points: EENet saves {eenet:.1f}% vs the anchor's "
                    f"{anchor:.1f}% ({eenet - anchor:+.1f} points{shared})."
                )
    return lines


def write_results(
    rows: list[dict], args: argparse.Namespace, provenance: Provenance, stem: str
) -> list[Path]:
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, png_path = out / f"{stem}.csv", out / f"{stem}.md", out / f"{stem}.png"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# Risk-controlled early exit: validity and cost saved",
        "",
        *provenance.lines(),
        "",
        f"Learn-then-Test, exact binomial p-values, fixed-sequence testing, delta = {args.delta}, "
        f"{args.splits} random calibration draws of half the size of each set's test logits, "
        f"{args.n_points} + 1 operating points per path; policies fitted and paths traced once on "
        "the validation logits. Risk: accuracy_gap (last exit right, chosen exit wrong), in accuracy "
        "points. Two designs. Main columns (i.i.d.): each calibration set is n draws with replacement "
        "from the test logits (the pool), so the pool is the population the guarantee is about; "
        "violation rate: share of splits whose chosen point's pool risk exceeds epsilon (at most "
        "delta, up to the binomial error of the splits); mean risk and cost saved (1 - pool mean "
        "cost / last exit's cost) at the chosen point. Halves columns: the pool split into a "
        "calibration half and a test half, risk and cost measured on the test half (see Findings).",
        "",
        "| data | method | epsilon (points) | violation rate | mean risk (points) | cost saved (%) | sd "
        "| certified | halves: test-half violation rate | halves: cost saved (%) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['data']} | {r['method']} | {r['epsilon_points']:g} | {r['violation_rate']:.3f} "
            f"| {r['mean_risk_points']:.2f} | {r['cost_saved_pct']:.1f} | {r['cost_saved_pct_sd']:.1f} "
            f"| {r['certified_rate']:.2f} | {r['halves_test_violation_rate']:.3f} "
            f"| {r['halves_cost_saved_pct']:.1f} |"
        )
    lines += ["", "## Findings", "", *findings(rows, args.delta, args.splits)]
    md_path.write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(dict.fromkeys(r["data"] for r in rows))
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.8), squeeze=False)
    for ax, name in zip(axes[0], sets, strict=True):
        for method, (label, _) in METHODS.items():
            mine = [r for r in rows if r["data"] == name and r["method"] == method]
            epsilons, saved = [r["epsilon_points"] for r in mine], [r["cost_saved_pct"] for r in mine]
            ax.plot(epsilons, saved, marker="o", label=label)
        ax.set_xscale("log")
        ax.set_xticks(args.epsilons, [f"{e:g}" for e in args.epsilons])
        ax.minorticks_off()
        ax.set_xlabel("epsilon (accuracy points)")
        ax.set_title(name)
    axes[0][0].set_ylabel("cost saved vs last exit (%)")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(METHODS), fontsize=7, frameon=False)
    fig.suptitle(f"Certified at delta={args.delta}: cost saved, mean of {args.splits} splits", fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return [md_path, csv_path, png_path]


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sets", nargs="+", choices=list(EXIT_LOGIT_SETS),
        default=[name for name in EXIT_LOGIT_SETS if name not in MANY_EXIT_SETS],
        help="default: every shipped set but the many-exit ones (benchmarks/many_exits.py covers those)",
    )
    parser.add_argument("--splits", type=int, default=500)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.5, 1.0, 2.0, 5.0])
    parser.add_argument("--delta", type=float, default=0.1)
    parser.add_argument("--n-points", type=int, default=100)
    parser.add_argument("--max-epochs", type=int, default=60, help="EENet scorer epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--out-dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    stem = "risk_control"
    if args.quick:
        args.splits, args.sets = QUICK["splits"], QUICK["sets"]
        args.max_epochs, args.n_points = QUICK["max_epochs"], QUICK["n_points"]
        stem = "risk_control_quick"
    provenance = Provenance.start("benchmarks/risk_control.py", argv)
    rng = np.random.default_rng(args.seed)
    rows = [row for name in args.sets for row in run_set(name, args, rng)]
    return write_results(rows, args, provenance.finish(), stem)


if __name__ == "__main__":
    for path in main(sys.argv[1:]):
        print(path)
