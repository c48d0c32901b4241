"""Speed of the exit decision: per exit at batch 1, and ``predict_exit`` under CPU contention.

Measures, as medians (with min and max) of ``--repeats`` runs (default 5):

- the time of one exit decision at batch 1 (``ExitDecider.decide`` on one sample's
  exit-``k`` logits with the state the earlier exits left), averaged over the exits of
  a sample that runs to the last, for every policy at K = 4, 8, 16 exits (C = 10
  classes) and K = 4, C = 1000; with the first and last exit's times apart (equal when
  the cost does not grow with the exit index), the ratio to the MSDNet rule's
  (``MaxProbPolicy``) decision, and, as the reference, ``decide_at_exit``, which
  re-scores exits ``0..k`` at every exit ``k`` (what early-exit inference called before
  the decider);
- ``predict_exit`` throughput (samples/s) of every policy on 10^6 samples (K = 4,
  C = 10) with the default BLAS and OpenMP threads (prediction then runs its row blocks
  on as many threads as BLAS may use), while another process keeps one core busy
  (``--no-contention`` to skip it); side by side, the same calls on one thread
  (``threadpoolctl.threadpool_limits(1)``), the reference.

Logits come from :func:`eenet_sklearn.datasets.make_exit_logits`; the policies are
fitted on ``--fit-samples`` of them (prediction does the same work whatever the
training). Targets (issue 11, on 2 cores): EENet's decision within 2x the MSDNet
rule's, and ``predict_exit`` at >= 1.5 million samples/s with one core busy.

    python benchmarks/decision_speed.py           # ~3 min; writes benchmarks/results/decision_speed.{md,csv}
    python benchmarks/decision_speed.py --quick   # seconds; writes decision_speed_quick.{md,csv}
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import threadpoolctl
from _provenance import Provenance

from eenet_sklearn._registry import make_policy
from eenet_sklearn.datasets import make_exit_logits
from eenet_sklearn.metrics import budget_at_position

RESULTS = Path(__file__).parent / "results"
POLICIES = ("maxprob", "entropy", "patience", "fixed", "learned-score", "eenet")

FULL = {
    "shapes": [(4, 10), (8, 10), (16, 10), (4, 1000)],
    "fit_samples": 2000,
    "decisions": 150,  # samples decided (each through every exit) per run
    "throughput_samples": 10**6,
}
QUICK = {
    "shapes": [(4, 10), (4, 100)],
    "fit_samples": 400,
    "decisions": 20,
    "throughput_samples": 10**4,
}


def fitted_policies(n_exits: int, n_classes: int, n_samples: int, seed: int) -> dict:
    """Every policy, fitted on synthetic logits of the shape, at a budget 30% of the way up."""
    costs = np.arange(1.0, n_exits + 1.0)
    budget = budget_at_position(costs, 0.3)
    X, y = make_exit_logits(n_samples, n_exits, n_classes, random_state=seed)
    classes = np.arange(n_classes)  # a small fitting set may miss a class
    options = {"eenet": {"max_epochs": 2, "random_state": 0, "device": "cpu"}}
    policies = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small fitting sets
        for name in POLICIES:
            policy = make_policy(name, costs, budget, classes=classes, **options.get(name, {}))
            policies[name] = policy.fit(X, y)
    return policies


def time_decisions(policy, X: np.ndarray) -> tuple[float, float, float]:
    """Mean seconds per ``decide`` call at batch 1, over all exits; and at the first and last exit."""
    decider = policy.exit_decider()
    n_exits = X.shape[1]
    per_exit = np.zeros(n_exits)
    for row in X:
        state = decider.initial_state(1)
        for k in range(n_exits):
            outputs = row[k : k + 1]
            start = time.perf_counter()
            _, _, state = decider.decide(k, outputs, state)
            per_exit[k] += time.perf_counter() - start
    per_exit /= len(X)
    return float(per_exit.mean()), float(per_exit[0]), float(per_exit[-1])


def time_prefix_decisions(policy, X: np.ndarray) -> float:
    """Mean seconds per ``decide_at_exit`` call at batch 1 (re-scoring exits 0..k), over all exits."""
    n_exits = X.shape[1]
    start = time.perf_counter()
    for row in X:
        for k in range(n_exits):
            policy.decide_at_exit(row[None, : k + 1])
    return (time.perf_counter() - start) / (len(X) * n_exits)


def bench_decisions(config: dict, repeats: int, seed: int, log) -> list[dict]:
    rows = []
    for n_exits, n_classes in config["shapes"]:
        log(f"fitting every policy at K={n_exits}, C={n_classes}")
        policies = fitted_policies(n_exits, n_classes, config["fit_samples"], seed)
        X, _ = make_exit_logits(config["decisions"], n_exits, n_classes, random_state=seed + 1)
        for policy in policies.values():  # warm-up, not timed
            time_decisions(policy, X[:3])
        for name, policy in policies.items():
            runs = [time_decisions(policy, X) for _ in range(repeats)]
            prefix = [time_prefix_decisions(policy, X[: max(3, len(X) // 10)]) for _ in range(repeats)]
            rows.append(
                {
                    "n_exits": n_exits,
                    "n_classes": n_classes,
                    "policy": name,
                    "decide_us": 1e6 * float(np.median([r[0] for r in runs])),
                    "decide_us_min": 1e6 * float(np.min([r[0] for r in runs])),
                    "decide_us_max": 1e6 * float(np.max([r[0] for r in runs])),
                    "first_exit_us": 1e6 * float(np.median([r[1] for r in runs])),
                    "last_exit_us": 1e6 * float(np.median([r[2] for r in runs])),
                    "decide_at_exit_us": 1e6 * float(np.median(prefix)),
                }
            )
            log(f"  {name}: {rows[-1]['decide_us']:.1f} us per decision")
        shape = [r for r in rows if (r["n_exits"], r["n_classes"]) == (n_exits, n_classes)]
        reference = next(r["decide_us"] for r in shape if r["policy"] == "maxprob")
        for row in shape:
            row["ratio_to_maxprob"] = row["decide_us"] / reference
    return rows


def bench_throughput(config: dict, repeats: int, seed: int, contention: bool, log) -> list[dict]:
    """``predict_exit`` samples/s of every policy at K=4, C=10, side by side in one run.

    Runs alternate between the policies and between the default threads and one thread
    (one run of each, ``repeats`` times), so that a change in the machine's load falls on
    all of them alike. Wall-clock rates (the criterion), and, on one thread, rates per
    second of this process's CPU time (less sensitive to other processes taking the CPUs).
    """
    policies = fitted_policies(4, 10, config["fit_samples"], seed)
    X, _ = make_exit_logits(config["throughput_samples"], 4, 10, random_state=seed + 2)
    busy = None
    if contention:  # one core kept busy by another process for the whole measurement
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        wall: dict[str, list[float]] = {name: [] for name in POLICIES}
        single: dict[str, list[float]] = {name: [] for name in POLICIES}
        cpu: dict[str, list[float]] = {name: [] for name in POLICIES}
        for policy in policies.values():
            policy.predict_exit(X[:50000])  # warm-up: imports, thread pools
        for _ in range(repeats):
            for name in POLICIES:
                start = time.perf_counter()
                policies[name].predict_exit(X)
                wall[name].append(time.perf_counter() - start)
                with threadpoolctl.threadpool_limits(1):
                    start, start_cpu = time.perf_counter(), time.process_time()
                    policies[name].predict_exit(X)
                    single[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    rows = []
    for name in POLICIES:
        rates = [len(X) / s for s in wall[name]]
        rows.append(
            {
                "policy": name,
                "n_samples": len(X),
                "busy_core": contention,
                "samples_per_s": float(np.median(rates)),
                "samples_per_s_min": float(np.min(rates)),
                "samples_per_s_max": float(np.max(rates)),
                "one_thread_samples_per_s": float(np.median([len(X) / s for s in single[name]])),
                "samples_per_cpu_s": float(np.median([len(X) / s for s in cpu[name]])),
            }
        )
        log(f"  predict_exit {name}: {rows[-1]['samples_per_s'] / 1e6:.2f} M samples/s")
    return rows


def markdown(provenance: Provenance, decisions: list[dict], throughput: list[dict], repeats: int) -> str:
    lines = ["# Exit decision speed", "", *provenance.lines(), ""]
    lines += [
        "## Per-exit decision at batch 1",
        "",
        f"Microseconds per `ExitDecider.decide` call on one sample, mean over the exits of samples "
        f"that run to the last exit; median of {repeats} runs (min-max). `first`/`last`: the first "
        "and last exit's time (the decider carries what the earlier exits left, so the cost does "
        "not grow with the exit index). `decide_at_exit`: the reference, re-scoring exits 0..k at "
        "every exit k (what early-exit inference called before).",
        "",
        "| K | C | policy | decide (us) | min-max | first | last | vs MSDNet rule | decide_at_exit (us) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in decisions:
        lines.append(
            f"| {r['n_exits']} | {r['n_classes']} | {r['policy']} | {r['decide_us']:.1f} | "
            f"{r['decide_us_min']:.1f}-{r['decide_us_max']:.1f} | {r['first_exit_us']:.1f} | "
            f"{r['last_exit_us']:.1f} | {r['ratio_to_maxprob']:.2f}x | {r['decide_at_exit_us']:.1f} |"
        )
    if throughput:
        busy = "with one core kept busy by another process" if throughput[0]["busy_core"] else "idle"
        lines += [
            "",
            f"## `predict_exit` throughput, K=4, C=10, {throughput[0]['n_samples']:,} samples, {busy}",
            "",
            "Float32 logits; default BLAS and OpenMP threads: prediction runs its row blocks on "
            "as many threads as BLAS may use, each with BLAS limited to one thread. Median of "
            f"{repeats} runs (min-max) of wall-clock time, the policies alternating in one run. "
            "`one thread`: the same call under `threadpoolctl.threadpool_limits(1)`, run right "
            "after each default one; `per CPU s`: its samples per second of the process's CPU "
            "time, which other processes taking the CPUs disturb less.",
            "",
            "| policy | M samples/s | min-max | one thread | threads' gain | M samples per CPU s |",
            "|---|---|---|---|---|---|",
        ]
        for r in throughput:
            lines.append(
                f"| {r['policy']} | {r['samples_per_s'] / 1e6:.2f} | "
                f"{r['samples_per_s_min'] / 1e6:.2f}-{r['samples_per_s_max'] / 1e6:.2f} | "
                f"{r['one_thread_samples_per_s'] / 1e6:.2f} | "
                f"{r['samples_per_s'] / r['one_thread_samples_per_s']:.2f}x | "
                f"{r['samples_per_cpu_s'] / 1e6:.2f} |"
            )
    eenet = [r for r in decisions if r["policy"] == "eenet"]
    lines += ["", "## Findings", ""]
    worst = max(eenet, key=lambda r: r["ratio_to_maxprob"])
    lines.append(
        f"- EENet's decision at batch 1 is at most {worst['ratio_to_maxprob']:.2f}x the MSDNet rule's "
        f"(K={worst['n_exits']}, C={worst['n_classes']}); target 2x."
    )
    growth = max(r["last_exit_us"] / r["first_exit_us"] for r in decisions)
    lines.append(f"- Last exit / first exit time, worst policy and shape: {growth:.2f}x.")
    if throughput:
        rate = next(r["samples_per_s"] for r in throughput if r["policy"] == "eenet")
        ratio = rate / next(r["samples_per_s"] for r in throughput if r["policy"] == "maxprob")
        lines.append(
            f"- `EarlyExitPolicy.predict_exit`: {rate / 1e6:.2f} M samples/s, {ratio:.2f}x the MSDNet "
            "rule's (target 1.5 M on 2 cores with one kept busy; see the load average above for "
            "other processes sharing the machine)."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds); writes *_quick files")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where the .md and .csv go")
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic logits")
    parser.add_argument(
        "--no-contention", action="store_true", help="no busy process during the throughput runs"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    config = QUICK if args.quick else FULL

    def log(message: str) -> None:
        if not args.quiet:
            print(message, flush=True)

    provenance = Provenance.start("benchmarks/decision_speed.py", argv)
    decisions = bench_decisions(config, args.repeats, args.seed, log)
    throughput = bench_throughput(config, args.repeats, args.seed, not args.no_contention, log)
    provenance.finish()

    stem = "decision_speed_quick" if args.quick else "decision_speed"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    md, table = args.out_dir / f"{stem}.md", args.out_dir / f"{stem}.csv"
    md.write_text(markdown(provenance, decisions, throughput, args.repeats))
    fields = sorted({key for row in decisions + throughput for key in row})
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["section", *fields])
        writer.writeheader()
        for row in decisions:
            writer.writerow({"section": "decision", **row})
        for row in throughput:
            writer.writerow({"section": "throughput", **row})
    log(md.read_text())
    return [md, table]


if __name__ == "__main__":
    main()
