"""Does the budget hold when traffic drifts? Static, recalibrated and controlled policies, corrupted stream.

A 4-exit CNN (``multi_exit_cnn``, widths 32-64-128-256) is trained on clean
Fashion-MNIST training images (``--data mnist`` for MNIST); the policies are fitted on the
logits of clean held-out training images that the network never saw, at a budget
``--position`` of the way from the first exit's measured cost to the last's. Then the
10,000 test images, drawn ``passes`` times in a fresh random order with fresh corruption,
make a stream that drifts from clean to corrupted: additive Gaussian pixel noise
(standard deviation ``severity * --noise`` on pixels in [0, 1], clipped back to [0, 1])
and a random rotation (uniform in ``+-severity * --rotation`` degrees), the severity 0
over the first third of the stream, ramping linearly up to 1 over the middle third and
staying at 1 over the last third.

Each policy (EENet and the MSDNet max-probability rule) is run along the stream in six
ways:

- ``static``: the thresholds fitted on clean data, throughout;
- ``recalibrated``: ``policy.recalibrate`` on the first ``recalibration`` corrupted
  samples (the start of the ramp, unlabeled), used from the sample after them on;
- ``recalibrated late``: the same on the first ``recalibration`` samples at full
  severity, used from the sample after them on;
- ``recalibrated in hindsight``: each block of ``recalibration`` samples decided with
  thresholds recalibrated on that block itself. No deployment can do this (it sees the
  block before deciding it); it spends exactly the target everywhere, so its accuracy is
  what the policy's scores and quotas give at the target on this stream: the reference
  for a controller's accuracy at equal cost;
- ``controller``: ``eenet_sklearn.online.BudgetController`` fed the stream batch by batch;
- ``one offset``: the controller as it was before per-exit quotas, kept as a reference:
  one offset shared by every exit's threshold on the policy's score scale, moved by the
  batch's excess cost (``offset += step * sum(cost - target) / (costs[-1] - costs[0])``).

The logits of every exit are computed once for the whole stream by the full network: the
policies' decisions are causal (the decision at exit ``k`` reads exits ``0..k`` only), so
applying a policy to the full logits gives the exits that early-exit inference would
take (the controllers' windows of scores take those of the samples reaching each exit,
as in early-exit inference). The table gives, for each policy and way, the mean cost over the policy's target
(``target_cost_``: the budget, unless EENet chose to spend less) and the accuracy, overall
and in each third of the stream, and the worst 5000-sample window after a burn-in of 2000
samples (the window whose cost is farthest from the target). Target: the controller's
windowed cost stays within [0.95, 1.05] x the target after the burn-in, on a stream where
the static policy overspends by 10% or more. The stream is 3 passes over the test images
(30,000 samples), so that there are 5000-sample windows after the burn-in in each third.

    python benchmarks/drift.py            # 4-6 min on 2 cores; writes results/drift.{md,csv,png}
    python benchmarks/drift.py --quick    # tiny sizes, a minute; writes drift_quick.*

``--scaled-logits`` runs the controllers instead on the shipped ``fashion_cnn4`` test logits
(:func:`~eenet_sklearn.datasets.load_exit_logits`), drawn at random 30,000 times and
multiplied by 0.3 (harder: less confident) or 3 (easier) along five streams (clean, all
hard, all easy, hard from a third of the way on, hard and easy alternating every 128 samples),
with the policies fitted on its validation logits at a budget 40% of the way along the
costs, batches of 128; it writes ``results/drift_scaled.{md,csv}`` (a few minutes).
"""

from __future__ import annotations

import argparse
import copy
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _provenance import Provenance
from scipy.special import logit
from tqdm import tqdm

from eenet_sklearn._recipes import image_inputs, train_image_cnn
from eenet_sklearn._registry import POLICIES, make_policy
from eenet_sklearn._report import exit_percentages
from eenet_sklearn.datasets import load_fashion_mnist, load_mnist
from eenet_sklearn.metrics import budget_at_position
from eenet_sklearn.nn import measure_latency
from eenet_sklearn.online import BudgetController

RESULTS = Path(__file__).parent / "results"
#: The policies run along the stream, by their registry names.
POLICY_NAMES = ("eenet", "maxprob")
#: The ways each policy is run along the stream, in the table's order.
METHODS = (
    "static", "recalibrated", "recalibrated late", "recalibrated in hindsight", "controller", "one offset",
)
#: The controller's target band for the windowed cost over the budget, and the static
#: policy's overspending that makes the stream a test of it.
TARGET_BAND, STATIC_OVERSPEND = (0.95, 1.05), 1.10
#: The controller's accuracy target: at most this many points below the hindsight
#: recalibration's, which spends the target everywhere.
ACCURACY_GAP = 1.0

FULL = {
    "widths": (32, 64, 128, 256), "train": 20000, "val": 10000, "epochs": 3, "test": 10000,
    "passes": 3, "batch_size": 200, "step_size": 0.002, "score_window": 1000, "one_offset_step": 0.01,
    "window": 5000, "burn_in": 2000, "recalibration": 1000, "scaled_samples": 30000,
    "curve_window": 1000, "latency_repeats": 10, "eenet": {},
}
QUICK = {
    "widths": (8, 16, 32), "train": 600, "val": 800, "epochs": 1, "test": 400,
    "passes": 3, "batch_size": 20, "step_size": 0.005, "score_window": 200, "one_offset_step": 0.02,
    "window": 300, "burn_in": 100, "recalibration": 60, "scaled_samples": 1500,
    "curve_window": 60, "latency_repeats": 2, "eenet": {"max_epochs": 5},
}


@dataclass
class Stream:
    """The drifting stream: all exits' logits, labels and the corruption severity of each sample."""

    logits: np.ndarray
    labels: np.ndarray
    severity: np.ndarray

    @property
    def thirds(self) -> tuple[slice, slice, slice]:
        """The clean, ramping and fully corrupted thirds of the stream."""
        n = len(self.labels)
        return slice(0, n // 3), slice(n // 3, 2 * n // 3), slice(2 * n // 3, n)


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def severity_ramp(n_samples: int) -> np.ndarray:
    """Severity of each sample: 0 over the first third, rising linearly to 1 over the middle third, then 1.

    The first sample of the middle third is already (slightly) corrupted; the last one is at 1.
    """
    start, stop = n_samples // 3, 2 * n_samples // 3
    return np.clip((np.arange(n_samples) + 1 - start) / (stop - start), 0.0, 1.0)


def corrupt(images: torch.Tensor, severity: np.ndarray, *, noise: float, rotation: float,
            rng: np.random.Generator) -> torch.Tensor:
    """Rotate each image by a random angle and add Gaussian pixel noise, both scaled by its severity.

    Parameters
    ----------
    images : Tensor of shape (n_samples, 1, height, width)
        Pixels in [0, 1], from :func:`~eenet_sklearn._recipes.image_inputs`; not modified.
    severity : ndarray of shape (n_samples,)
        In [0, 1]; 0 leaves an image as it is.
    noise : float
        Standard deviation of the added noise at severity 1, in pixel units.
    rotation : float
        Largest rotation at severity 1, degrees; the angle is uniform in ``+-severity * rotation``.
    rng : numpy Generator
        Draws the angles and the noise.

    Returns
    -------
    Tensor of shape (n_samples, 1, height, width)
        Corrupted images, clipped to [0, 1] (bilinear rotation, black outside the image).
    """
    n = len(images)
    angles = np.deg2rad(rng.uniform(-1.0, 1.0, n) * severity * rotation)
    cos, sin = np.cos(angles), np.sin(angles)
    theta = torch.from_numpy(
        np.stack([np.stack([cos, -sin, np.zeros(n)], 1), np.stack([sin, cos, np.zeros(n)], 1)], 1)
    ).float()
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    rotated = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    noisy = rotated + torch.from_numpy(
        (rng.standard_normal(images.shape) * (severity * noise)[:, None, None, None]).astype(np.float32)
    )
    return noisy.clamp_(0.0, 1.0)


def make_stream(net, images: np.ndarray, labels: np.ndarray, *, passes: int, noise: float, rotation: float,
                seed: int = 0) -> Stream:
    """``passes`` shuffled copies of the images, corrupted along :func:`severity_ramp`, through the network.

    Every exit's logits are computed for every sample with the full network.
    """
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(images)) for _ in range(passes)])
    severity = severity_ramp(len(order))
    inputs = corrupt(image_inputs(images[order]), severity, noise=noise, rotation=rotation, rng=rng)
    return Stream(net.transform(inputs), labels[order], severity)


def train_network(data: str, settings: dict, quiet: bool):
    """The CNN trained on clean training images, and the clean held-out split and test images.

    The held-out rows are a seeded random draw from the training file, disjoint from the
    rows trained on.
    """
    load = load_fashion_mnist if data == "fashion-mnist" else load_mnist
    images, labels = load("train")
    test_images, test_labels = load("test")
    order = np.random.default_rng(0).permutation(len(images))
    train = order[: settings["train"]]
    val = order[settings["train"] : settings["train"] + settings["val"]]
    net = train_image_cnn(
        image_inputs(images[train]), labels[train], widths=settings["widths"], epochs=settings["epochs"],
        verbose=not quiet,
    )
    test = slice(0, settings["test"])
    return net, image_inputs(images[val]), labels[val], test_images[test], test_labels[test]


def run_static(policy, stream: Stream) -> tuple[np.ndarray, np.ndarray]:
    """Exits and predicted labels of the fitted policy along the stream."""
    return policy.predict_exit(stream.logits), policy.predict(stream.logits)


def run_recalibrated(policy, stream: Stream, start: int, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Exits and labels of the fitted policy until ``start + n_samples``, then of a copy recalibrated on
    the unlabeled samples ``start .. start + n_samples - 1``."""
    calibration = slice(start, start + n_samples)
    recalibrated = copy.deepcopy(policy).recalibrate(stream.logits[calibration])
    exits, labels = run_static(policy, stream)
    after = slice(calibration.stop, None)
    exits[after], labels[after] = recalibrated.predict_exit(stream.logits[after]), recalibrated.predict(
        stream.logits[after]
    )
    return exits, labels


def run_hindsight(policy, stream: Stream, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Exits and labels with each block of ``block`` samples decided by the policy recalibrated on it.

    Not causal: the reference for what the scores and quotas give at the target cost.
    """
    exits = np.empty(len(stream.labels), dtype=np.int64)
    labels = np.empty(len(stream.labels), dtype=stream.labels.dtype)
    for start in range(0, len(exits), block):
        rows = slice(start, start + block)
        recalibrated = copy.deepcopy(policy).recalibrate(stream.logits[rows])
        exits[rows], labels[rows] = recalibrated.predict_exit(stream.logits[rows]), recalibrated.predict(
            stream.logits[rows]
        )
    return exits, labels


def run_one_offset(policy, stream: Stream, settings: dict) -> tuple[np.ndarray, np.ndarray]:
    """Exits and labels of the former controller: one offset for all exits, moved by the excess cost.

    The thresholds move on the logit of the policy's scores (probabilities for both
    policies run here) by ``-offset``; after each batch of ``batch_size``,
    ``offset += step * sum(cost - target) / (costs[-1] - costs[0])``, the update of
    adaptive conformal inference on the cost (Gibbs and Candes, NeurIPS 2021). The
    fitted thresholds but the last are finite here.
    """
    costs, target, step = policy.costs_, policy.target_cost_, settings["one_offset_step"]
    scores = policy.exit_scores(stream.logits).astype(np.float64)
    thresholds = np.asarray(policy.thresholds_, dtype=np.float64)
    scores, thresholds = logit(np.clip(scores, 1e-12, 1 - 1e-12)), logit(np.clip(thresholds, 1e-12, 1))
    exits = np.empty(len(stream.labels), dtype=np.int64)
    offset = 0.0
    for start in range(0, len(exits), settings["batch_size"]):
        rows = slice(start, start + settings["batch_size"])
        shifted = thresholds - offset
        shifted[-1] = -np.inf
        leaving = scores[rows] >= shifted
        exits[rows] = leaving.argmax(axis=1)
        offset += step * float(np.sum(costs[exits[rows]] - target)) / (costs[-1] - costs[0])
    # The label at each exit is that exit's prediction (MaxProbPolicy and EarlyExitPolicy).
    labels = policy.classes_[stream.logits[np.arange(len(exits)), exits].argmax(axis=1)]
    return exits, labels


def run_controller(policy, stream: Stream, settings: dict, quiet: bool, label: str):
    """Exits and labels of a :class:`~eenet_sklearn.online.BudgetController` fed the stream batch by batch.

    Returns
    -------
    exits, labels : ndarray of shape (n_samples,)
    drift_at : int or None
        The stream position at the end of the first batch after which the controller
        signalled drift; ``None`` if it never did.
    """
    controller = BudgetController(policy, step_size=settings["step_size"], window=settings["score_window"])
    n = len(stream.labels)
    exits = np.empty(n, dtype=np.int64)
    labels = np.empty(n, dtype=stream.labels.dtype)
    drift_at = None
    starts = range(0, n, settings["batch_size"])
    for start in tqdm(starts, desc=f"controller, {label}", unit="batch", disable=quiet, file=sys.stderr):
        rows = slice(start, min(start + settings["batch_size"], n))
        labels[rows], exits[rows] = controller.predict(stream.logits[rows], return_exits=True)
        if drift_at is None and controller.drift_detected_:
            drift_at = rows.stop
    return exits, labels, drift_at


def window_means(values: np.ndarray, window: int) -> np.ndarray:
    """Means of every run of ``window`` entries of ``values``: entry ``i`` covers ``i .. i + window - 1``."""
    sums = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    return (sums[window:] - sums[:-window]) / window


def summarise(policy_label: str, method: str, exits: np.ndarray, labels: np.ndarray, stream: Stream,
              costs: np.ndarray, policy, settings: dict) -> tuple[dict, dict]:
    """A table row of one policy run one way along the stream, and its curves for the plot.

    Costs are over the policy's ``target_cost_``: what its thresholds spend on the fitting
    data, and what the controller holds (the budget, unless EENet chose to spend less).
    """
    cost = costs[exits] / policy.target_cost_
    correct = (labels == stream.labels).astype(np.float64)
    window, burn_in = settings["window"], settings["burn_in"]
    ratios = window_means(cost, window)[burn_in:]
    accuracies = window_means(correct, window)[burn_in:]
    worst = int(np.argmax(np.abs(ratios - 1.0)))
    row = {
        "policy": policy_label,
        "method": method,
        "budget": float(policy.budget_),
        "target_cost": float(policy.target_cost_),
        "cost_ratio": float(cost.mean()),
        "accuracy": float(correct.mean()),
    }
    for name, rows in zip(("clean", "ramp", "corrupted"), stream.thirds, strict=True):
        row[f"{name}_cost_ratio"] = float(cost[rows].mean())
        row[f"{name}_accuracy"] = float(correct[rows].mean())
    row.update({
        "worst_window_start": burn_in + worst,
        "worst_window_cost_ratio": float(ratios[worst]),
        "worst_window_accuracy": float(accuracies[worst]),
        "min_window_cost_ratio": float(ratios.min()),
        "max_window_cost_ratio": float(ratios.max()),
        "windows_in_band": float(np.mean((ratios >= TARGET_BAND[0]) & (ratios <= TARGET_BAND[1]))),
        "exit_shares": exit_percentages(np.bincount(exits, minlength=len(costs)) / len(exits)),
        "corrupted_exit_shares": exit_percentages(
            np.bincount(exits[stream.thirds[2]], minlength=len(costs)) / len(exits[stream.thirds[2]])
        ),
    })
    curve_window = settings["curve_window"]
    curves = {"cost": window_means(cost, curve_window), "accuracy": window_means(correct, curve_window)}
    return row, curves


def run(args: argparse.Namespace, settings: dict) -> tuple[list[dict], dict, dict]:
    """Train, fit, make the stream and run every policy every way along it."""
    quiet = args.quiet
    n_exits = len(settings["widths"])
    _say(quiet, f"Training a {n_exits}-exit CNN on {settings['train']} clean {args.data} images...")
    net, X_val, y_val, test_images, test_labels = train_network(args.data, settings, quiet)
    val_logits = net.transform(X_val)
    costs = measure_latency(net, X_val, batch_size=256 if len(y_val) >= 256 else len(y_val),
                            n_repeats=settings["latency_repeats"])
    budget = budget_at_position(costs, args.position)

    _say(quiet, f"Corrupting a stream of {settings['passes']} x {len(test_labels)} test images...")
    stream = make_stream(net, test_images, test_labels, passes=settings["passes"], noise=args.noise,
                         rotation=args.rotation, seed=args.seed)
    _, ramp, corrupted = stream.thirds
    info = {
        "costs": costs, "budget": budget, "n_val": len(y_val), "n_stream": len(stream.labels),
        "n_test": len(test_labels), "stream": stream,
        "val_exit_accuracy": (val_logits.argmax(2) == y_val[:, None]).mean(0),
        "corrupted_exit_accuracy": (
            stream.logits[corrupted].argmax(2) == stream.labels[corrupted][:, None]
        ).mean(0),
        "calibration": {"recalibrated": ramp.start, "recalibrated late": corrupted.start},
        "drift_at": {}, "target_cost": {},
    }
    rows, curves = [], {}
    for name in POLICY_NAMES:
        spec = POLICIES[name]
        params = {"random_state": 0, **settings["eenet"]} if name == "eenet" else {}
        _say(quiet, f"Fitting {spec.label} on {len(y_val)} clean held-out samples...")
        policy = make_policy(name, costs, budget, **params).fit(val_logits, y_val)
        n_cal = settings["recalibration"]
        runs = {
            "static": run_static(policy, stream),
            "recalibrated": run_recalibrated(policy, stream, ramp.start, n_cal),
            "recalibrated late": run_recalibrated(policy, stream, corrupted.start, n_cal),
            "recalibrated in hindsight": run_hindsight(policy, stream, n_cal),
            "one offset": run_one_offset(policy, stream, settings),
        }
        # What the controller holds by default: what the fitted thresholds spend on the fitting data.
        info["target_cost"][spec.label] = float(policy.target_cost_)
        *runs["controller"], info["drift_at"][spec.label] = run_controller(
            policy, stream, settings, quiet, spec.label
        )
        for method in METHODS:
            row, curve = summarise(spec.label, method, *runs[method], stream, costs, policy, settings)
            rows.append(row)
            curves[spec.label, method] = curve
    return rows, curves, info


def findings(rows: list[dict], info: dict) -> list[str]:
    """Whether the stream tests the controller, whether it meets its targets, its drift signal, accuracy."""
    lines = []
    for label in dict.fromkeys(row["policy"] for row in rows):
        by_method = {row["method"]: row for row in rows if row["policy"] == label}
        static, controller = by_method["static"], by_method["controller"]
        overspends = static["max_window_cost_ratio"] >= STATIC_OVERSPEND
        held = controller["windows_in_band"] == 1.0
        drift_at = info["drift_at"][label]
        lines.append(
            f"- {label}: the static policy's worst window spends {static['max_window_cost_ratio']:.3f} x "
            f"the target ({'at least' if overspends else 'less than'} the {STATIC_OVERSPEND:.2f} that makes "
            "the stream a test); the controller's windows after the burn-in spend "
            f"{controller['min_window_cost_ratio']:.3f} to {controller['max_window_cost_ratio']:.3f} x: "
            f"target [{TARGET_BAND[0]:.2f}, {TARGET_BAND[1]:.2f}] {'met' if held else 'NOT met'} "
            f"({controller['windows_in_band']:.1%} of the windows in the band), at an accuracy of "
            f"{controller['accuracy']:.4f} against the static policy's {static['accuracy']:.4f}. Its drift "
            "signal first fired "
            + (f"after sample {drift_at}" if drift_at is not None else "never")
            + f" (the corruption starts at sample {info['calibration']['recalibrated']})."
        )
        hindsight, recalibrated, one = (
            by_method[m] for m in ("recalibrated in hindsight", "recalibrated", "one offset")
        )
        accuracy, h_accuracy = controller["accuracy"], hindsight["accuracy"]
        r_accuracy = recalibrated["accuracy"]
        gap = 100 * (h_accuracy - accuracy)
        lines.append(
            f"  Accuracy at equal cost: the controller's {accuracy:.4f} is {abs(gap):.2f} points "
            f"{'below' if gap > 0 else 'above'} the hindsight recalibration's {h_accuracy:.4f} (cost "
            f"{hindsight['cost_ratio']:.3f} x; target: within {ACCURACY_GAP:g} point: "
            f"{'met' if gap <= ACCURACY_GAP else 'NOT met'}) and {100 * (accuracy - one['accuracy']):+.2f} "
            f"points against one offset for all exits ({one['accuracy']:.4f}; last third "
            f"{controller['corrupted_accuracy']:.4f} against {one['corrupted_accuracy']:.4f}, exits "
            f"{controller['corrupted_exit_shares']} against {one['corrupted_exit_shares']} %). The one-shot "
            f"recalibration on the first corrupted samples reaches {r_accuracy:.4f} by spending "
            f"{recalibrated['cost_ratio']:.3f} x the target (its worst window "
            f"{recalibrated['max_window_cost_ratio']:.3f} x): {100 * (r_accuracy - accuracy):.2f} points "
            f"more than the controller, {100 * (r_accuracy - h_accuracy):.2f} more than any quota "
            "thresholds get at the target on this stream."
        )
    return lines


def setup_lines(info: dict, args: argparse.Namespace, settings: dict) -> list[str]:
    """The markdown paragraph that says what was run."""
    costs, n_cal, budget = info["costs"], settings["recalibration"], info["budget"]
    onset, late = info["calibration"]["recalibrated"], info["calibration"]["recalibrated late"]
    targets = ", ".join(f"{label} {cost / budget:.3f}" for label, cost in info["target_cost"].items())
    widths = "-".join(map(str, settings["widths"]))
    return [
        f"Network: a {len(costs)}-exit CNN (widths {widths}) trained on {settings['train']} clean "
        f"{args.data} training images ({settings['epochs']} epochs). Per-exit costs, measured at batch 256: "
        + " / ".join(f"{c:.4f}" for c in costs)
        + f" ms. Budget: {budget:.4g} ms per sample, {args.position:.0%} of the way from the first exit's "
        f"cost to the last's. Policies fitted on the logits of {info['n_val']} clean held-out training "
        "images, never trained on.",
        f"Stream: the {info['n_test']} test images drawn {settings['passes']} times, each time in a fresh "
        f"random order with fresh corruption ({info['n_stream']} samples, seed {args.seed}): clean over the "
        f"first third, then Gaussian pixel noise (std up to {args.noise:g} on pixels in [0, 1]) and a random "
        f"rotation (up to +-{args.rotation:g} degrees), their severity ramping linearly from 0 to 1 over the "
        "middle third and staying at 1 over the last third. Per-exit accuracy on the clean held-out images: "
        + ", ".join(f"{a:.4f}" for a in info["val_exit_accuracy"])
        + "; on the last third of the stream: "
        + ", ".join(f"{a:.4f}" for a in info["corrupted_exit_accuracy"])
        + ".",
        "All exits' logits of the stream were computed once, with the full network: the decisions are "
        "causal (the decision at exit k reads exits 0..k only), so applying a policy to the full logits "
        "gives the exits that early-exit inference takes.",
        f"Ways: `static`, the fitted thresholds; `recalibrated`, `policy.recalibrate` on the first {n_cal} "
        f"corrupted samples (unlabeled: samples {onset}..{onset + n_cal - 1}, the start of the ramp), used "
        f"from sample {onset + n_cal} on; `recalibrated late`, the same on the first {n_cal} samples at full "
        f"severity ({late}..{late + n_cal - 1}); `recalibrated in hindsight`, each block of {n_cal} samples "
        "decided with thresholds recalibrated on that block itself (not causal: it spends the target "
        "everywhere, the reference for accuracy at equal cost); `controller`, "
        f"`BudgetController(policy, step_size={settings['step_size']:g}, window={settings['score_window']})` "
        f"fed batches of {settings['batch_size']} through `predict` (per-exit quotas); `one offset`, the "
        "former controller, kept as a reference: one offset for every exit's threshold on the score scale, "
        f"moved by {settings['one_offset_step']:g} x the batch's summed excess cost over the cost span.",
        "Costs are over each policy's target, `target_cost_`: what its thresholds spend on the fitting "
        "data and what the controller holds, the budget unless EENet chose to spend less (x the budget: "
        f"{targets}). Columns: cost / target and accuracy, overall and over each third of the stream; the "
        f"worst window: of the {settings['window']}-sample windows starting at sample {settings['burn_in']} "
        "or later (after the burn-in), the one whose cost is farthest from the target (its first sample, "
        "cost / target, accuracy); the window range: the least and the most any of those windows spends; "
        "the exits taken over the last third. Target: the controller's windows within "
        f"[{TARGET_BAND[0]:.2f}, {TARGET_BAND[1]:.2f}] x the target, on a stream where the static "
        f"policy's worst window spends {STATIC_OVERSPEND:.2f} x or more.",
    ]


def write_csv(path: Path, rows: list[dict]) -> None:
    """The rows as csv, floats rounded to 4 decimals."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(
            {key: round(value, 4) if isinstance(value, float) else value for key, value in row.items()}
            for row in rows
        )


def write_results(rows: list[dict], curves: dict, info: dict, args: argparse.Namespace, settings: dict,
                  out_dir: Path, stem: str, provenance: Provenance) -> list[Path]:
    """The table as csv and markdown (with the provenance, the setup and the findings), and the plot."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, png_path = (out_dir / f"{stem}.{ext}" for ext in ("csv", "md", "png"))
    write_csv(csv_path, rows)
    lines = [
        "# Budgets under drift: static, recalibrated and controlled policies",
        "",
        *provenance.lines(),
        "",
        *setup_lines(info, args, settings),
        "",
        "| policy | way | cost / target | accuracy | clean: cost / target, accuracy | ramp | corrupted "
        "| worst window: start, cost / target, accuracy | window range | exits (%), last third |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        thirds = " | ".join(
            f"{row[f'{name}_cost_ratio']:.3f}, {row[f'{name}_accuracy']:.4f}"
            for name in ("clean", "ramp", "corrupted")
        )
        lines.append(
            f"| {row['policy']} | {row['method']} | {row['cost_ratio']:.3f} | {row['accuracy']:.4f} "
            f"| {thirds} | {row['worst_window_start']}, {row['worst_window_cost_ratio']:.3f}, "
            f"{row['worst_window_accuracy']:.4f} "
            f"| {row['min_window_cost_ratio']:.3f} - {row['max_window_cost_ratio']:.3f} "
            f"| {row['corrupted_exit_shares']} |"
        )
    lines += ["", "## Findings", "", *findings(rows, info)]
    md_path.write_text("\n".join(lines) + "\n")
    plot_stream(curves, info, settings, png_path)
    return [md_path, csv_path, png_path]


def plot_stream(curves: dict, info: dict, settings: dict, path: Path) -> None:
    """Trailing-window cost / target and accuracy along the stream, one column per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(label for label, _ in curves))
    fig, axes = plt.subplots(2, len(labels), figsize=(5.5 * len(labels), 6.5), sharex=True, squeeze=False)
    window = settings["curve_window"]
    _, ramp, corrupted = info["stream"].thirds
    for column, label in enumerate(labels):
        cost_ax, accuracy_ax = axes[:, column]
        for ax in (cost_ax, accuracy_ax):
            ax.axvspan(ramp.start, ramp.stop, color="0.93", zorder=0)
            ax.axvspan(corrupted.start, corrupted.stop, color="0.85", zorder=0)
        cost_ax.axhspan(*TARGET_BAND, color="tab:green", alpha=0.12, zorder=0)
        cost_ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
        for method in METHODS:
            curve = curves[label, method]
            x = np.arange(window, window + len(curve["cost"]))  # the window's end
            # The recalibrated runs follow the static one until they recalibrate: drawn thinner, on top.
            # The hindsight reference and the former controller: dashed.
            width = 2.6 if method == "static" else 1.2
            style = "--" if method in ("recalibrated in hindsight", "one offset") else "-"
            cost_ax.plot(x, curve["cost"], style, label=method, linewidth=width)
            accuracy_ax.plot(x, curve["accuracy"], style, label=method, linewidth=width)
        cost_ax.set(title=label, ylabel=f"cost / target, last {window} samples")
        accuracy_ax.set(xlabel="stream position (samples)", ylabel=f"accuracy, last {window} samples")
        if column == 0:
            cost_ax.legend(loc="upper left", fontsize="small")
    fig.suptitle("Drift from clean to corrupted (shaded: ramp, then full severity)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


#: The streams of ``--scaled-logits``: the factor each sample's logits are multiplied by.
SCALED_STREAMS = {
    "clean": lambda index: np.ones(len(index)),
    "all hard": lambda index: np.full(len(index), 0.3),
    "all easy": lambda index: np.full(len(index), 3.0),
    "hard from a third of the way on": lambda index: np.where(index < len(index) // 3, 1.0, 0.3),
    "hard and easy, alternating every 128": lambda index: np.where((index // 128) % 2 == 0, 0.3, 3.0),
}


def run_scaled(settings: dict, quiet: bool) -> list[dict]:
    """The static policy, the controller and one offset on shipped logits scaled along each stream."""
    from eenet_sklearn.datasets import load_exit_logits

    data = load_exit_logits("fashion_cnn4")
    costs = data.costs
    budget = budget_at_position(costs, 0.4)
    n = settings["scaled_samples"]
    draws = np.random.default_rng(0).integers(0, len(data.test_labels), n)
    scaled = {**settings, "batch_size": 128}
    rows = []
    for name in ("maxprob", "eenet"):
        params = {"random_state": 0, **settings["eenet"]} if name == "eenet" else {}
        policy = make_policy(name, costs, budget, **params).fit(data.val_logits, data.val_labels)
        for kind, factor in SCALED_STREAMS.items():
            _say(quiet, f"{POLICIES[name].label}, {kind}...")
            logits = (data.test_logits[draws] * factor(np.arange(n))[:, None, None]).astype(np.float32)
            stream = Stream(logits, data.test_labels[draws], np.zeros(n))
            controller = BudgetController(policy, window=settings["score_window"])
            exits = np.concatenate(
                [controller.predict_exit(logits[i : i + 128]) for i in range(0, n, 128)]
            )
            labels = policy.classes_[logits[np.arange(n), exits].argmax(axis=1)]
            row = {"policy": POLICIES[name].label, "stream": kind}
            for way, (way_exits, way_labels) in {
                "static": run_static(policy, stream),
                "controller": (exits, labels),
                "one offset": run_one_offset(policy, stream, scaled),
            }.items():
                cost = costs[way_exits] / policy.target_cost_
                windows = window_means(cost, settings["window"])[settings["burn_in"] :]
                row[f"{way}_cost_ratio"] = float(cost.mean())
                row[f"{way}_min_window"] = float(windows.min())
                row[f"{way}_max_window"] = float(windows.max())
                row[f"{way}_accuracy"] = float(np.mean(way_labels == stream.labels))
            rows.append(row)
    return rows


def write_scaled(
    rows: list[dict], settings: dict, out_dir: Path, stem: str, provenance: Provenance
) -> list[Path]:
    """The ``--scaled-logits`` table, as csv and markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    write_csv(csv_path, rows)
    window, burn_in = settings["window"], settings["burn_in"]
    lines = [
        "# The online controller on shipped logits made harder or easier",
        "",
        *provenance.lines(),
        "",
        f"`fashion_cnn4`'s test logits, {settings['scaled_samples']} random draws, multiplied by 0.3 "
        "(harder) or 3 (easier) along each stream; policies fitted on its validation logits at a budget "
        "40% of the way from the first exit's cost to the last's; batches of 128. `controller`: "
        f"`BudgetController(policy, window={settings['score_window']})` (per-exit quotas, the default "
        f"step); `one offset`: the former controller (one offset for all exits, step "
        f"{settings['one_offset_step']:g}). Costs over the target; windows: the least and the most of the "
        f"{window}-sample windows starting at sample {burn_in} or later.",
        "",
        "| stream | policy | static: cost / target | static: accuracy | controller: cost / target "
        f"| controller: {window}-sample windows after {burn_in} | controller: accuracy "
        "| one offset: windows | one offset: accuracy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda row: list(SCALED_STREAMS).index(row["stream"])):
        lines.append(
            f"| {row['stream']} | {row['policy']} | {row['static_cost_ratio']:.3f} "
            f"| {row['static_accuracy']:.4f} "
            f"| {row['controller_cost_ratio']:.3f} "
            f"| {row['controller_min_window']:.3f} - {row['controller_max_window']:.3f} "
            f"| {row['controller_accuracy']:.4f} "
            f"| {row['one offset_min_window']:.3f} - {row['one offset_max_window']:.3f} "
            f"| {row['one offset_accuracy']:.4f} |"
        )
    md_path.write_text("\n".join(lines) + "\n")
    return [md_path, csv_path]


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    parser.add_argument("--data", choices=("fashion-mnist", "mnist"), default="fashion-mnist")
    parser.add_argument("--position", type=float, default=0.5,
                        help="the budget, between the first (0) and the last (1) exit's cost")
    parser.add_argument("--noise", type=float, default=0.05, help="noise std at full severity")
    parser.add_argument("--rotation", type=float, default=20.0,
                        help="largest rotation at full severity, degrees")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stream's order and corruption")
    parser.add_argument("--out-dir", "--out", type=Path, default=RESULTS)
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no epoch log")
    parser.add_argument("--scaled-logits", action="store_true",
                        help="the controllers on shipped logits scaled harder or easier, instead of images")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    provenance = Provenance.start("benchmarks/drift.py", argv)
    if args.scaled_logits:
        stem = "drift_scaled_quick" if args.quick else "drift_scaled"
        rows = run_scaled(settings, args.quiet)
        written = write_scaled(rows, settings, args.out_dir, stem, provenance.finish())
        if not args.quiet:
            print("\n".join(str(path) for path in written))
        return written
    rows, curves, info = run(args, settings)
    stem = "drift_quick" if args.quick else "drift"
    written = write_results(rows, curves, info, args, settings, args.out_dir, stem, provenance.finish())
    if not args.quiet:
        print("\n".join(str(path) for path in written))
    return written


if __name__ == "__main__":
    main()
