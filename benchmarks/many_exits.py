"""Networks with many exits (issue 13, item 2): fit time, accuracy and budget kept at K = 4, 8, 12, 16.

The sets are CNNs on Fashion-MNIST with an exit after every block: ``fashion_cnn4`` (4
exits) and ``fashion_cnn8``, ``fashion_cnn12``, ``fashion_cnn16``
(``benchmarks/make_deep_cnn_logits.py``). Every policy is fitted on the first
``--fit-rows`` rows of ``val`` (4,000: all of a deep set's) and scored on the first
``--test-rows`` rows of ``test`` (4,000: all of a deep set's); the deep sets' rows are the
first rows of ``fashion_cnn4``'s splits, so every K sees the same images. Costs are the
sets' ``costs_ms``; budgets sit at positions k / 11, k = 1..10, between the first and the
last exit's cost (:func:`eenet_sklearn.metrics.budget_at_position`).

- ``timing``: ``EarlyExitPolicy`` with its default parameters (``device="cpu"``, one
  torch thread) fitted on the same val rows of every set at position 5/11, ``--repeats``
  times (seeds 0, 1, ...), the sets interleaved in one process after an untimed warm-up
  fit; median CPU seconds (``time.process_time``, independent of the machine's load) and
  wall seconds, and their ratios to K = 4.
- ``curves``: at each budget, EENet (``random_state=0``, defaults), EENet wrapped in
  :class:`~eenet_sklearn.AnytimeEnsemble` (default weights) and the five baselines of
  :mod:`eenet_sklearn._registry`, fitted on val, scored on test: accuracy and test cost /
  budget (the budget kept); two oracle bounds on test
  (:func:`eenet_sklearn.metrics.oracle_accuracy`): each exit's own predictions (bounds
  EENet and the baselines) and the anytime ensemble's (``weights=``, bounds EENet+ens);
  the share of the gap between the best baseline and the plain oracle that EENet closes.
- the *diagnosis* of the budgets where EENet closes less than 25% of that gap or trails
  the best baseline by more than 0.1 point (issue 13, item 5): (a) an in-sample ceiling,
  EENet fitted on the test rows and scored on them (``eenet-insample``: optimistic, the
  most this scorer gains from these outputs); (b) the oracle's lead decomposed by sample:
  rescues (the last exit wrong, an earlier one right), samples a policy sends too early
  (it stops before the oracle's correct exit) or too late (it passes it, into a wrong
  exit); (c) the paired standard error of EENet minus the best baseline on the test rows.

Writes ``benchmarks/results/many_exits.{md,csv,png}``. ``--cache DIR`` keeps every fit's
result (one JSON file per fit, keyed by its settings, with its per-sample exits and
correctness), so the parts can run in separate processes (``--part timing``,
``--part curves --sets ...``) and a last run of the plain command reads them all back
and writes the tables.

    python benchmarks/many_exits.py --n-jobs 2 --cache /tmp/fits   # ~130 EENet fits: ~15 min on 2 quiet cores
    python benchmarks/many_exits.py --part curves --sets fashion_cnn16 --cache /tmp/fits &
    python benchmarks/many_exits.py --part timing --cache /tmp/fits   # then the plain command
    python benchmarks/many_exits.py --quick            # a minute; writes many_exits_quick.*
    # The same tables and diagnosis for the other shipped sets (no fit-time part):
    python benchmarks/many_exits.py --sets mnist_mlp3 reviews_minilm6 --no-timing \
        --stem shipped_sets_goal --n-jobs 2 --cache /tmp/fits
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _provenance import Provenance
from joblib import Parallel, delayed
from scipy import stats
from tqdm import tqdm

from eenet_sklearn import AnytimeEnsemble, FixedExitPolicy
from eenet_sklearn._registry import POLICIES, make_policy
from eenet_sklearn.datasets import EXIT_LOGIT_SETS, load_exit_logits
from eenet_sklearn.metrics import budget_at_position, oracle_accuracy

RESULTS = Path(__file__).parent / "results"
SETS = ("fashion_cnn4", "fashion_cnn8", "fashion_cnn12", "fashion_cnn16")
POSITIONS = tuple(k / 11 for k in range(1, 11))
TIMING_POSITION = 5 / 11
BASELINES = tuple(name for name in POLICIES if name != "eenet")
#: EENet wrapped in an anytime ensemble, and EENet fitted and scored on the test rows (a ceiling).
ENSEMBLE, IN_SAMPLE = "eenet-ensemble", "eenet-insample"
ORACLE, ORACLE_ENSEMBLE = "oracle", "oracle-ensemble"
LABELS = {name: spec.short_label for name, spec in POLICIES.items()} | {
    ENSEMBLE: "EENet+ens", IN_SAMPLE: "EENet in-sample", ORACLE: "oracle (plain exits)",
    ORACLE_ENSEMBLE: "oracle (ensembled exits)",
}
#: Issue 13, item 5: EENet closes at least this share of the gap, and trails no baseline by more.
GOAL_GAP, GOAL_MARGIN = 0.25, 0.001
#: Bumped when a fit's cached result changes shape (v2: per-sample exits and correctness).
CACHE_VERSION = 2


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


def build(policy: str, costs: np.ndarray, budget: float, seed: int, config: dict):
    """An unfitted policy: a registry name, or EENet wrapped in an anytime ensemble / fitted in-sample."""
    if policy in ("eenet", ENSEMBLE, IN_SAMPLE):
        estimator = make_policy("eenet", costs, budget, **eenet_params(config) | {"random_state": seed})
        return AnytimeEnsemble(estimator) if policy == ENSEMBLE else estimator
    return make_policy(policy, costs, budget)


def fit_one(name: str, policy: str, position: float, seed: int, config: dict, detail: bool = False) -> dict:
    """Fit one policy on val (``eenet-insample``: on test) and measure it on test (in a joblib worker).

    With ``detail``, the row also holds every test sample's exit and whether it is right.
    """
    torch.set_num_threads(1)
    data = load(name, config["fit_rows"], config["test_rows"])
    budget = float(budget_at_position(data["costs"], position))
    estimator = build(policy, data["costs"], budget, seed, config)
    X_test, y_test = data["test"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-set and spend-less notes: the cost ratio says it
        start, start_cpu = time.perf_counter(), time.process_time()
        estimator.fit(*(data["test"] if policy == IN_SAMPLE else data["val"]))
        fit_s, cpu_s = time.perf_counter() - start, time.process_time() - start_cpu
    exits = np.asarray(estimator.predict_exit(X_test))
    correct = np.asarray(estimator.predict(X_test)) == y_test
    row = {
        "data": name, "K": data["K"], "policy": policy, "position": position, "seed": seed, "budget": budget,
        "accuracy": float(correct.mean()), "cost_ratio": float(data["costs"][exits].mean()) / budget,
        "fit_s": fit_s, "cpu_s": cpu_s, "load1": os.getloadavg()[0],
    }
    if detail:
        row |= {"exits": exits.astype(int).tolist(), "correct": correct.astype(int).tolist()}
    return row


def cached_fit(part: str, name: str, policy: str, position: float, seed: int, config: dict,
               cache: Path | None) -> dict | None:
    """:func:`fit_one`, its result kept in ``cache`` (one JSON file per fit) and read back when there."""
    what = {"part": part, "name": name, "policy": policy, "position": round(position, 9), "seed": seed,
            "version": CACHE_VERSION,
            **{key: config[key] for key in ("fit_rows", "test_rows", "eenet_params")}}
    key = hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]
    path = None if cache is None else cache / f"{part}_{name}_{policy}_{key}.json"
    if path is not None and path.exists():
        return {**json.loads(path.read_text()), "cached": True}
    if config.get("cached_only"):
        return None
    row = {**fit_one(name, policy, position, seed, config, detail=part == "curves"), "part": part}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(row))
    return {**row, "cached": False}


def oracle_rows(name: str, config: dict) -> list[dict]:
    """Both oracle bounds on test at every budget; the plain one with its per-sample exits.

    The ensemble's weights are :class:`~eenet_sklearn.AnytimeEnsemble`'s default, fitted
    on the val rows (they do not depend on the wrapped policy or the budget).
    """
    data = load(name, config["fit_rows"], config["test_rows"])
    (X_val, y_val), (X_test, y_test), costs = data["val"], data["test"], data["costs"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weights = AnytimeEnsemble(FixedExitPolicy(exit=0), costs=costs).fit(X_val, y_val).weights_
    right = np.asarray(X_test).argmax(axis=2) == np.asarray(y_test)[:, None]  # classes are 0..C-1
    right_val = np.asarray(X_val).argmax(axis=2) == np.asarray(y_val)[:, None]
    exit_accuracy = {"val": right_val.mean(axis=0).tolist(), "test": right.mean(axis=0).tolist()}
    rows = []
    for position in config["positions"]:
        budget = float(budget_at_position(costs, position))
        base = {"part": "curves", "data": name, "K": data["K"], "position": position, "seed": 0,
                "budget": budget, "fit_s": 0.0, "cached": False}
        for policy, w in ((ORACLE, None), (ORACLE_ENSEMBLE, weights)):
            accuracy, exits = oracle_accuracy(X_test, y_test, costs, budget, return_exits=True, weights=w)
            row = base | {"policy": policy, "accuracy": float(accuracy),
                          "cost_ratio": float(costs[exits].mean()) / budget}
            if w is None:
                correct = right[np.arange(len(exits)), exits]
                row |= {"exits": exits.tolist(), "correct": correct.astype(int).tolist(),
                        "right": right.astype(int).tolist(), "exit_accuracy": exit_accuracy,
                        "costs": costs.tolist()}
            rows.append(row)
    return rows


def run_curves(sets: list[str], config: dict, cache: Path | None, n_jobs: int, quiet: bool) -> list[dict]:
    """Every policy at every budget on every set (EENet fits first), in ``n_jobs`` processes."""
    jobs = [("curves", name, policy, position, 0, config, cache)
            for policy in ("eenet", ENSEMBLE, IN_SAMPLE, *BASELINES)
            for name in sets for position in config["positions"]]
    rows = list(tqdm(
        Parallel(n_jobs=n_jobs, return_as="generator")(delayed(cached_fit)(*job) for job in jobs),
        total=len(jobs), desc="curves", disable=quiet,
    ))
    rows = [row for row in rows if row is not None]
    return rows + [row for name in sets for row in oracle_rows(name, config)]


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
        "Fits on the same val rows for every K at position 5/11 (seeds "
        f"{', '.join(map(str, sorted({r['seed'] for r in timing})))}), the sets interleaved within each "
        "repeat in one process after an untimed warm-up fit. CPU seconds (`time.process_time`, torch on one "
        "thread) count this process's time only, but still rise when other work shares the CPUs (caches, the "
        "host's other guests), and wall seconds more so: only the ratios between sets timed together are "
        "compared. "
        f"Ratios of the medians to {sets[0]} (K = {summary[sets[0]]['K']})."
        + (f" One-minute load average after each timed fit: {min(loads):.2f} to {max(loads):.2f} (2 CPUs)."
           if (loads := [r["load1"] for r in timing if "load1" in r]) else ""),
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


def paired_se(a: list[int], b: list[int]) -> float:
    """Standard error of the mean of ``a - b`` (per-sample correctness): the noise of an accuracy margin."""
    return float(stats.sem(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)))


def decompose(oracle: dict, policy: dict) -> dict:
    """The oracle's lead over ``policy`` on test, by sample, as fractions of the test rows.

    ``rescue``: the oracle right, the policy wrong, and the last exit wrong (only an
    earlier exit is right: the network overthinks); ``early``: the last exit right, the
    policy wrong at an exit before the oracle's; ``late``: the same with the policy's exit
    after the oracle's (it passed a right exit); ``back``: the policy right where the
    oracle, short of budget, is wrong. ``rescue + early + late - back`` is the lead.
    """
    right = np.asarray(oracle["right"], dtype=bool)
    o_exit, o_ok = np.asarray(oracle["exits"]), np.asarray(oracle["correct"], dtype=bool)
    p_exit, p_ok = np.asarray(policy["exits"]), np.asarray(policy["correct"], dtype=bool)
    lead, last_ok = o_ok & ~p_ok, right[:, -1]
    parts = {"rescue": lead & ~last_ok, "early": lead & last_ok & (p_exit < o_exit),
             "late": lead & last_ok & (p_exit > o_exit), "back": ~o_ok & p_ok}
    parts = {key: float(value.mean()) for key, value in parts.items()}
    total = parts["rescue"] + parts["early"] + parts["late"] - parts["back"]
    assert abs(total - (o_ok.mean() - p_ok.mean())) < 1e-9, "the decomposition must add up to the lead"
    return parts


def budget_figures(rows: dict, position: float) -> dict | None:
    """Everything the tables say about one budget, or ``None`` when a fit is missing."""
    needed = ["eenet", *BASELINES, ORACLE]
    if not all((p, position) in rows for p in needed):
        return None
    best_name = max(BASELINES, key=lambda p: rows[(p, position)]["accuracy"])
    eenet, best, oracle = (rows[(p, position)] for p in ("eenet", best_name, ORACLE))
    lead = oracle["accuracy"] - best["accuracy"]
    figures = {
        "position": position, "budget": oracle["budget"], "best": best_name, "best_acc": best["accuracy"],
        "eenet": eenet["accuracy"], "oracle": oracle["accuracy"],
        "margin": eenet["accuracy"] - best["accuracy"],
        "lead": lead, "gap": (eenet["accuracy"] - best["accuracy"]) / lead if lead > 0 else float("nan"),
        "se": paired_se(eenet["correct"], best["correct"]) if "correct" in eenet and "correct" in best
        else None,
    }
    if (ENSEMBLE, position) in rows:
        figures["ens_gain"] = rows[(ENSEMBLE, position)]["accuracy"] - eenet["accuracy"]
    if (ORACLE_ENSEMBLE, position) in rows:
        figures["oracle_ens"] = rows[(ORACLE_ENSEMBLE, position)]["accuracy"]
    if (IN_SAMPLE, position) in rows and lead > 0:
        figures["ceiling"] = rows[(IN_SAMPLE, position)]["accuracy"]
        figures["ceiling_gap"] = (figures["ceiling"] - best["accuracy"]) / lead
    if all("exits" in r for r in (oracle, eenet, best)):
        figures["of_eenet"] = decompose(oracle, eenet)
        figures["rescue_of_lead"] = decompose(oracle, best)["rescue"] / lead if lead > 0 else float("nan")
    if "exit_accuracy" in oracle:
        figures |= {"exit_accuracy": oracle["exit_accuracy"], "costs": oracle["costs"]}
    figures["flagged"] = figures["gap"] < GOAL_GAP or figures["margin"] < -GOAL_MARGIN
    return figures


def pts(value: float) -> str:
    return f"{100 * value:+.2f}"


def accuracy_table(name: str, K: int, rows: dict, positions: list[float]) -> tuple[list[str], list[dict]]:
    """One set's accuracy table and the figures of every budget with all its fits."""
    policies = [p for p in ("eenet", ENSEMBLE, *BASELINES, ORACLE, ORACLE_ENSEMBLE)
                if any((p, position) in rows for position in positions)]
    lines = [
        f"### {name} (K = {K})",
        "",
        "Accuracy (test cost / budget in brackets). Gap closed = (EENet - best baseline) / (plain oracle - "
        "best baseline); ± = the paired standard error of EENet - best baseline on the test rows; "
        "ens gain = EENet+ens - EENet. The plain oracle bounds EENet and the baselines; the ensembled one "
        "bounds EENet+ens.",
        "",
        "| position | budget ms | " + " | ".join(LABELS[p] for p in policies)
        + " | EENet - best baseline (pts) | gap closed | ens gain (pts) |",
        "|---|---|" + "---|" * (len(policies) + 3),
    ]
    figures = []
    for position in positions:
        cells = [f"{rows[(p, position)]['accuracy']:.4f} ({rows[(p, position)]['cost_ratio']:.2f})"
                 if (p, position) in rows else "not run" for p in policies]
        budget = next(r["budget"] for (_, pos), r in rows.items() if pos == position)
        f = budget_figures(rows, position)
        tail = ["", "", ""]
        if f is not None:
            figures.append(f)
            se = "" if f["se"] is None else f" ± {100 * f['se']:.2f}"
            tail = [pts(f["margin"]) + se, f"{f['gap']:.0%}", pts(f["ens_gain"]) if "ens_gain" in f else ""]
        lines.append(f"| {position:.3f} | {budget:.4f} | " + " | ".join(cells + tail) + " |")
    if not figures:
        return [*lines, "", "Not enough fits to compare.", ""], figures
    lines += ["", f"EENet at the {len(figures)} budgets with every fit: mean gap closed "
              f"{np.nanmean([f['gap'] for f in figures]):.0%}; worst margin over the best baseline "
              f"{pts(min(f['margin'] for f in figures))} pts.", ""]
    return lines, figures


def set_summary(figures: list[dict], rows: dict) -> dict:
    """The per-set figures of the summary table."""
    def mean(key: str) -> float | None:
        values = [f[key] for f in figures if key in f]
        return float(np.nanmean(values)) if values else None

    worst = min(figures, key=lambda f: f["margin"])
    eenet_costs = [rows[("eenet", f["position"])]["cost_ratio"] for f in figures]
    return {
        "mean_gap_closed": mean("gap"), "budgets_below_goal": sum(f["gap"] < GOAL_GAP for f in figures),
        "min_margin": worst["margin"], "min_margin_se": worst["se"],
        "budgets_trailing": sum(f["margin"] < -GOAL_MARGIN for f in figures),
        "ens_mean_gain": mean("ens_gain"), "oracle_mean": mean("oracle"),
        "oracle_ens_mean": mean("oracle_ens"),
        "ceiling_mean_gap_closed": mean("ceiling_gap"), "rescue_share_mean": mean("rescue_of_lead"),
        "max_cost_ratio": max(eenet_costs), "min_cost_ratio": min(eenet_costs),
        "budgets_compared": len(figures),
    }


def fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def diagnosis(name: str, figures: list[dict]) -> list[str]:
    """The "why" of one set: a table of its flagged budgets and a reading computed from it."""
    flagged = [f for f in figures if f["flagged"]]
    if not flagged:
        return [f"**{name}**: the goal is met at every budget.", ""]
    lines = [
        f"**{name}**: {len(flagged)} of {len(figures)} budgets flagged.",
        "",
        "| position | best baseline | EENet - best (pts) ± SE | gap closed | in-sample ceiling "
        "| its gap closed | oracle - best (pts) | rescues' share of it "
        "| oracle - EENet (pts) = rescues + too early + too late "
        "- EENet-only |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in flagged:
        d = f.get("of_eenet")
        split = "" if d is None else (
            f"{100 * (f['oracle'] - f['eenet']):.2f} = {100 * d['rescue']:.2f} + {100 * d['early']:.2f} + "
            f"{100 * d['late']:.2f} - {100 * d['back']:.2f}")
        se = "" if f["se"] is None else f" ± {100 * f['se']:.2f}"
        lines.append(
            f"| {f['position']:.3f} | {LABELS[f['best']]} | {pts(f['margin'])}{se} | {f['gap']:.0%} | "
            f"{fmt(f.get('ceiling'), '.4f')} | {fmt(f.get('ceiling_gap'), '.0%')} | {100 * f['lead']:.2f} | "
            f"{fmt(f.get('rescue_of_lead'), '.0%')} | {split} |")
    reading = []
    trailing = [f for f in flagged if f["margin"] < -GOAL_MARGIN]
    if trailing:
        noisy = [f for f in trailing if f["se"] is not None and -f["margin"] <= 2 * f["se"]]
        reading.append(
            f"EENet trails the best baseline by more than {100 * GOAL_MARGIN:.1f} point at {len(trailing)} "
            f"budget(s) (worst {pts(min(f['margin'] for f in trailing))} pts); {len(noisy)} of them within "
            "two paired standard errors of zero (indistinguishable from a tie on these test rows).")
        reading += [overthinking(f) for f in trailing if "exit_accuracy" in f]
    ceilings = [f["ceiling_gap"] for f in flagged if "ceiling_gap" in f]
    if ceilings:
        reached = sum(c >= GOAL_GAP for c in ceilings)
        reading.append(
            f"Fitted on the test rows themselves, EENet closes {np.mean(ceilings):.0%} of the gap on average "
            f"at these budgets (at most {max(ceilings):.0%}; {reached} of {len(ceilings)} reach "
            f"{GOAL_GAP:.0%}): "
            + ("even with no generalisation to pay for, the scorer does not reach the goal, so the shortfall "
               "lies in what the exits' outputs tell about correctness, not in the fitting."
               if np.mean(ceilings) < GOAL_GAP else
               "with the test rows' own labels it reaches the goal, so part of the shortfall is fitting "
               "(generalisation from val to test)."))
    shares = [f["rescue_of_lead"] for f in flagged if "rescue_of_lead" in f]
    splits = [f["of_eenet"] for f in flagged if "of_eenet" in f]
    if shares and splits:
        remaining = sum(f["oracle"] - f["eenet"] for f in flagged if "of_eenet" in f)
        totals = {key: sum(d[key] for d in splits) / remaining for key in ("rescue", "early", "late", "back")}
        reading.append(
            f"Rescues (last exit wrong, an earlier exit right: overthinking, which a policy reading "
            f"confidences rarely finds) are {np.mean(shares):.0%} of the oracle's lead over the best "
            "baseline "
            f"on average; of the gap EENet leaves (oracle - EENet, summed over these budgets), rescues are "
            f"{totals['rescue']:.0%}, samples EENet sends too early {totals['early']:.0%}, samples where it "
            f"passes a right exit {totals['late']:.0%}, less {totals['back']:.0%} it gets right where the "
            "oracle does not.")
    return [*lines, "", " ".join(reading), ""]


def overthinking(f: dict) -> str:
    """At a budget where EENet trails: does an exit within the budget beat the last one, on test and val?"""
    affordable = [k for k, cost in enumerate(f["costs"]) if cost <= f["budget"]]
    test, val = (np.asarray(f["exit_accuracy"][split]) for split in ("test", "val"))
    best = max(affordable, key=lambda k: test[k])
    text = (f"At position {f['position']:.3f} ({LABELS[f['best']]} best), the most accurate exit within the "
            f"budget on test is exit {best} of 0..{len(test) - 1}, {pts(test[best] - test[-1])} pts over the "
            f"last exit on test and {pts(val[best] - val[-1])} on val")
    if "ceiling" in f:
        text += (f"; EENet fitted on the test rows still ends {pts(f['ceiling'] - f['best_acc'])} pts from "
                 f"{LABELS[f['best']]}")
    return text + "."


def summary_table(summary: dict, sets: list[str]) -> list[str]:
    lines = [
        "## Summary",
        "",
        "Means over the budgets with every fit. Goal (issue 13, item 5): gap closed >= 25% on average and "
        "EENet - best baseline >= -0.1 point at every budget. Oracle means: plain exits (bounds EENet and "
        "the "
        "baselines) and ensembled exits (bounds EENet+ens). In-sample ceiling: EENet fitted and scored on "
        "the test rows. Rescue share: part of oracle - best baseline from samples whose last exit is wrong.",
        "",
        "| set | K | mean gap closed | budgets < 25% | worst EENet - best (pts) ± SE "
        "| budgets trailing > 0.1 "
        "| EENet+ens - EENet (pts, mean) | oracle plain | oracle ensembled | in-sample ceiling's gap closed "
        "| rescue share |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in sets:
        s = summary[name]
        if "mean_gap_closed" not in s:
            continue
        se = "" if s["min_margin_se"] is None else f" ± {100 * s['min_margin_se']:.2f}"
        lines.append(
            f"| {name} | {s['K']} | {s['mean_gap_closed']:.0%} | {s['budgets_below_goal']} | "
            f"{pts(s['min_margin'])}{se} | {s['budgets_trailing']} | "
            f"{'' if s['ens_mean_gain'] is None else pts(s['ens_mean_gain'])} | "
            f"{fmt(s['oracle_mean'], '.4f')} | "
            f"{fmt(s['oracle_ens_mean'], '.4f')} | {fmt(s['ceiling_mean_gap_closed'], '.0%')} | "
            f"{fmt(s['rescue_share_mean'], '.0%')} |")
    return [*lines, ""]


def summarise(timing: list[dict], curves: list[dict], sets: list[str]) -> tuple[list[str], dict]:
    """Markdown tables and the per-set summary figures."""
    summary = {name: {"K": next(r["K"] for r in curves + timing if r["data"] == name)} for name in sets}
    timing_lines = fit_time_table(timing, summary) if timing else []
    accuracy_lines = ["## Accuracy on test at 10 budgets", ""]
    why = ["## Where the goal is not met, and why", "",
           "At each budget where EENet closes less than 25% of the gap or trails the best baseline by more "
           "than 0.1 point: the paired standard error of the margin (0.1 point is 4 of 4,000 samples), the "
           "in-sample ceiling (EENet fitted on the test rows and scored on them: optimistic, the most this "
           "scorer can gain from these outputs), and the oracle's lead split by sample: rescues (the last "
           "exit wrong, an earlier one right), too early (EENet stops, wrong, before the oracle's right "
           "exit), "
           "too late (EENet passes the oracle's right exit and is wrong where it stops, though the last exit "
           "is right), less the samples EENet gets right and the oracle, short of budget, does not.", ""]
    for name in sets:
        rows = {(r["policy"], round(r["position"], 6)): r for r in curves if r["data"] == name}
        positions = sorted({p for _, p in rows})
        lines, figures = accuracy_table(name, summary[name]["K"], rows, positions)
        accuracy_lines += lines
        if figures:
            summary[name] |= set_summary(figures, rows)
            why += diagnosis(name, figures)
    return [*timing_lines, *summary_table(summary, sets), *accuracy_lines, *why], summary


def plot(path: Path, curves: list[dict], sets: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.6), squeeze=False)
    styles = {"eenet": "o-", ENSEMBLE: "s-", ORACLE: "k--", ORACLE_ENSEMBLE: "k:"}
    for ax, name in zip(axes[0], sets, strict=True):
        for policy in ("eenet", ENSEMBLE, "maxprob", "entropy", "patience", "learned-score", ORACLE,
                       ORACLE_ENSEMBLE):
            rows = sorted((r for r in curves if r["data"] == name and r["policy"] == policy),
                          key=lambda r: r["budget"])
            if rows:
                ax.plot([r["budget"] for r in rows], [r["accuracy"] for r in rows], styles.get(policy, ".-"),
                        label=LABELS[policy], ms=4)
        ax.set_title(name)
        ax.set_xlabel("budget (ms per sample)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=EXIT_LOGIT_SETS,
                        help="the first is the reference of the fit-time ratios")
    parser.add_argument("--no-timing", action="store_true", help="leave out the fit-time part")
    parser.add_argument("--stem", default="many_exits", help="name of the written files (default many_exits)")
    parser.add_argument("--fit-rows", type=int, default=4000, help="val rows every policy is fitted on")
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
    stem = args.stem
    if args.quick:
        config |= {"fit_rows": 300, "test_rows": 300, "repeats": 1, "eenet_params": {"max_epochs": 2},
                   "positions": [POSITIONS[0], POSITIONS[4], POSITIONS[-1]]}
        stem = f"{args.stem}_quick"
    timing, curves = [], []
    if args.part != "curves" and not args.no_timing:
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
    fits = [row for row in timing + curves if row["policy"] not in (ORACLE, ORACLE_ENSEMBLE)]
    n_cached = sum(row["cached"] for row in fits)
    deep = set(args.sets) <= set(SETS)
    header = [
        "# Networks with many exits: fit time, accuracy and budget kept at K = 4 .. 16"
        if deep else "# Accuracy against every baseline and the oracle, and where EENet falls short, and why",
        "",
        *provenance.lines(),
        "",
        f"Sets: {', '.join(args.sets)}"
        + (" (CNNs on Fashion-MNIST with an exit after every block; the deep sets from "
           "`benchmarks/make_deep_cnn_logits.py`; the same images for every K)" if deep else
           " (`eenet_sklearn.datasets.load_exit_logits`)")
        + f". Every policy fitted on the first {config['fit_rows']} val rows and scored on the first "
        f"{config['test_rows']} test rows of each set; costs in measured ms (`costs_ms`). EENet with its "
        "defaults "
        f"{json.dumps(eenet_params(config))}, random_state 0; EENet+ens: the same EENet wrapped in "
        "`AnytimeEnsemble` (default weights, fitted on the same val rows); EENet in-sample: the same EENet "
        "fitted on the test rows (a ceiling, not a result); baselines: "
        f"{', '.join(POLICIES[name].short_label for name in BASELINES)}. "
        "Absolute seconds depend on the machine's load (the Machine line); the fit-time ratios come from "
        "fits "
        "interleaved in one process."
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
