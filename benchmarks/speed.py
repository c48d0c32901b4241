"""Speed of ``predict_exit`` and of ``EarlyExitPolicy.fit`` on synthetic per-exit logits.

Measures, as medians (with min and max) of ``--repeats`` runs (default 3):

- ``predict_exit`` throughput (samples/s) of ``EarlyExitPolicy`` and, as a reference,
  ``MaxProbPolicy`` at N = 10^4, 10^5, 10^6 for (K=4 exits, C=10 classes) and
  (K=6, C=100), with the ratio EENet / MaxProb;
- the wall time of ``EarlyExitPolicy(...).fit`` with default parameters at
  N = 10^4 and 10^5 (K=4, C=10).

Logits come from :func:`eenet_sklearn.datasets.make_exit_logits`. The targets of the
issue (on a 2-core CPU): ``predict_exit`` >= 1e6 samples/s at K=4, C=10, N=10^6,
and a default fit at N=10^4 under 60 s.

    python benchmarks/speed.py            # <= ~15 min; writes benchmarks/results/speed.{md,json}
    python benchmarks/speed.py --quick    # tiny sizes, seconds; writes speed_quick.{md,json}
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _provenance import Provenance
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from eenet_sklearn._registry import make_policy
from eenet_sklearn.datasets import make_exit_logits
from eenet_sklearn.metrics import budget_at_position

RESULTS = Path(__file__).parent / "results"

# The policies whose prediction is timed are fitted on ``predictor_samples`` samples with
# ``predictor_epochs`` epochs: prediction does the same work whatever the training.
FULL = {
    "predict_shapes": [(4, 10), (6, 100)],
    "predict_sizes": [10**4, 10**5, 10**6],
    "predictor_samples": 5000,
    "predictor_epochs": 3,
    "fit_sizes": [10**4, 10**5],
    "fit_params": {},
}
QUICK = {
    "predict_shapes": [(4, 10), (6, 100)],
    "predict_sizes": [10**3, 10**4],
    "predictor_samples": 500,
    "predictor_epochs": 1,
    "fit_sizes": [500],
    "fit_params": {"max_epochs": 2},
}
#: make_exit_logits works in float64; generating large sets in blocks bounds memory.
GENERATION_BLOCK = 100_000
TARGET_THROUGHPUT = 1e6  # samples/s, K=4, C=10, N=10^6
TARGET_FIT_SECONDS = 60.0  # default fit, N=10^4


def costs_and_budget(n_exits: int) -> tuple[np.ndarray, float]:
    """Cumulative costs 1..K and a budget 40% of the way from the first to the last."""
    costs = np.arange(1.0, n_exits + 1.0)
    return costs, budget_at_position(costs, 0.4)


def synthetic_logits(n_samples: int, n_exits: int, n_classes: int, seed: int) -> np.ndarray:
    """``make_exit_logits`` for ``n_samples``, generated in blocks (block ``i`` seeded ``seed + i``)."""
    logits = np.empty((n_samples, n_exits, n_classes), dtype=np.float32)
    for i, start in enumerate(range(0, n_samples, GENERATION_BLOCK)):
        stop = min(start + GENERATION_BLOCK, n_samples)
        logits[start:stop] = make_exit_logits(stop - start, n_exits, n_classes, random_state=seed + i)[0]
    return logits


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


#: How each fit runs: as the library does by default (on the CPU, the scorer trains on one
#: OpenMP thread, which the library sets itself).
FIT_THREADS = {"default": None}


def bench_fit(config: dict, repeats: int, seed: int, budget_s: float, progress: tqdm) -> list[dict]:
    """Fit times; a run whose projected time exceeds what is left of ``budget_s`` is skipped.

    A run is projected to take as long as the slowest run of the same size and threads
    so far, or (the first) as long per sample as the slowest run at the previous size.
    """
    rows = []
    costs, budget = costs_and_budget(4)
    spent, per_sample = 0.0, {}
    for n_samples in config["fit_sizes"]:
        X, y = make_exit_logits(n_samples, 4, 10, random_state=seed)
        for threads, limit in FIT_THREADS.items():
            seconds, skipped = [], None
            for _ in range(repeats):
                projected = max(seconds) if seconds else per_sample.get(threads, 0.0) * n_samples
                if spent + projected > budget_s:
                    skipped = (
                        f"{repeats - len(seconds)} run(s) skipped: ~{projected:.0f} s each projected, "
                        "past --fit-budget"
                    )
                    progress.update(repeats - len(seconds))
                    break
                progress.set_postfix_str(f"fit N={n_samples:.0e} ({threads}) run {len(seconds) + 1}")
                policy = make_policy("eenet", costs, budget, random_state=0, **config["fit_params"])
                with threadpool_limits(limit, user_api="openmp"):
                    seconds.append(timed(policy.fit, X, y))
                spent += seconds[-1]
                progress.update()
            if seconds:
                per_sample[threads] = max(seconds) / n_samples
            rows.append(
                {
                    "n_exits": 4,
                    "n_classes": 10,
                    "n_samples": n_samples,
                    "params": config["fit_params"] or "defaults",
                    "threads": threads,
                    "seconds": summary(seconds) if seconds else None,
                    "note": skipped,
                }
            )
    return rows


def fmt_rate(value: float) -> str:
    """``1.23e6`` style."""
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def fmt_size(n: int) -> str:
    """``10^5`` for powers of ten, else the number."""
    exponent = round(np.log10(n))
    return f"10^{exponent}" if 10**exponent == n else str(n)


def markdown(provenance: Provenance, info: dict, predict: list[dict], fit: list[dict], quick: bool) -> str:
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
        "more (with torch's default 2 threads, fits at N=10^4 took 25.9-116.9 s on this loaded "
        "machine, against about 5 s on one).",
        "",
        "| K | C | N | parameters | torch threads | runs | median [min, max] | note |",
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
        lines.append(
            f"| {row['n_exits']} | {row['n_classes']} | {fmt_size(row['n_samples'])} | {params} "
            f"| {row['threads']} | {runs} | {cell} "
            f"| {row['note'] or ''} |"
        )
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
        fit_1e4 = next((r for r in fit if r["n_samples"] == 10**4 and r["threads"] == "default"), None)
        if fit_1e4:
            if fit_1e4["seconds"]:
                seconds = fit_1e4["seconds"]["median"]
                verdict = "met" if seconds < TARGET_FIT_SECONDS else "NOT met"
                lines.append(
                    f"- default fit at N=10^4 under {TARGET_FIT_SECONDS:.0f} s: {seconds:.1f} s, {verdict}."
                )
            else:
                lines.append(f"- default fit at N=10^4 under {TARGET_FIT_SECONDS:.0f} s: not measured.")
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
        + len(config["fit_sizes"]) * len(FIT_THREADS)
    ) * args.repeats
    with tqdm(total=n_steps, desc="speed", unit="run", disable=args.quiet) as progress:
        predict = bench_predict(config, args.repeats, args.seed, progress)
        fit = bench_fit(config, args.repeats, args.seed, args.fit_budget, progress)
    provenance.finish()

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(provenance, info, predict, fit, args.quick))
    raw = {"provenance": provenance.as_dict(), "settings": info, "predict_exit": predict, "fit": fit}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=2, default=str) + "\n")
    if not args.quiet:
        print(out.read_text())
        print(f"Wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
