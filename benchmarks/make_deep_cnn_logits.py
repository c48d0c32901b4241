"""Build ``eenet_sklearn/data/fashion_cnn{8,12,16}.npz``: CNNs with 8, 12 and 16 exits on Fashion-MNIST.

Three plain CNNs (:func:`eenet_sklearn.nn.multi_exit_cnn` with one 3x3 convolution,
batch norm and ReLU per block, ``convs_per_block=1``) with an exit after every block:
8, 12 and 16 blocks. Block 0 has 8 channels at 28x28; a 2x2 max pooling follows it,
and the other blocks form three groups of (nearly) equal size at 14x14 (16 channels),
7x7 (32) and 3x3 (64), with a pooling between groups. Each exit averages its block's
output to a 2x2 grid and applies a linear layer (``head_pool_size=2``).

Splits (those of ``fashion_cnn4``): the 60,000 official training images permuted by
``numpy.random.RandomState(1)``; the first 50,000 train the network, the other 10,000
are ``val``; ``test`` is the official 10,000 test images. The shipped files keep the
first ``--ship`` rows of each (4,000 by default, so the three files stay under 12 MB);
``meta`` holds the accuracies on all 10,000 as well.

Training: all exits jointly with :class:`eenet_sklearn.nn.MultiExitClassifier`
(``DepthWeightedLoss``: exit k weighted k + 1; AdamW, lr 1e-3, batch 128, ``--epochs``
epochs, ``torch.manual_seed(1)`` before the network is built and before training), on
one CPU thread by default.

Costs (per sample; cumulative ones reach exit k: blocks and heads ``0..k``):

- ``costs_ms``: :func:`eenet_sklearn.nn.measure_latency` at batch size 1 on one CPU
  thread, ``--latency-warmup`` untimed then ``--latency-repeats`` timed ``test`` images,
  in ``--latency-passes`` passes; the shipped value is the median over the passes.
- ``costs_flops``: :func:`eenet_sklearn.nn.count_flops` at batch size 1 (convolutions
  and matrix products, 2 FLOPs per multiply-add); a CNN's count does not depend on the image.
- ``head_costs_ms`` / ``head_costs_flops``: exit k's head alone (pooling and linear
  layer, not its block): timed on the same images and passes, one clock read around
  each head call, median over images, then over passes; FLOPs counted on the head's call.

    python benchmarks/make_deep_cnn_logits.py --models /tmp/deep_cnn_models   # keeps the trained weights
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _provenance import Provenance
from torch.utils.flop_counter import FlopCounterMode

from eenet_sklearn.datasets import load_fashion_mnist
from eenet_sklearn.nn import (
    MultiExitClassifier,
    MultiExitNetwork,
    count_flops,
    measure_latency,
    multi_exit_cnn,
)

DATA = Path(__file__).resolve().parent.parent / "eenet_sklearn" / "data"
SEED = 1
N_TRAIN = 50_000
#: Blocks of the three networks, and their split into the 14x14, 7x7 and 3x3 groups after block 0.
GROUPS = {8: (3, 2, 2), 12: (4, 4, 3), 16: (5, 5, 5)}
GROUP_WIDTHS = (16, 32, 64)
FIRST_WIDTH = 8


def architecture(n_blocks: int) -> dict:
    """``multi_exit_cnn`` keyword arguments of the ``n_blocks``-exit network."""
    sizes = GROUPS[n_blocks]
    widths = [FIRST_WIDTH] + [w for w, size in zip(GROUP_WIDTHS, sizes, strict=True) for _ in range(size)]
    pool_after = (0, sizes[0], sizes[0] + sizes[1])
    return {"n_classes": 10, "widths": widths, "pool_after": pool_after, "convs_per_block": 1,
            "head_pool_size": 2}


def images(split: str) -> tuple[torch.Tensor, np.ndarray]:
    X, y = load_fashion_mnist(split)
    return torch.from_numpy((X[:, None] / 255.0).astype(np.float32)), y


def splits() -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    X, y = images("train")
    order = np.random.RandomState(SEED).permutation(len(y))
    train, val = order[:N_TRAIN], order[N_TRAIN:]
    return {"train": (X[train], y[train]), "val": (X[val], y[val]), "test": images("test")}


def train(
    n_blocks: int, X: torch.Tensor, y: np.ndarray, epochs: int, quiet: bool
) -> tuple[MultiExitNetwork, list]:
    torch.manual_seed(SEED)
    network = multi_exit_cnn(**architecture(n_blocks))
    net = MultiExitClassifier(
        network, max_epochs=epochs, lr=1e-3, batch_size=128, train_split=None, verbose=int(not quiet)
    )
    torch.manual_seed(SEED)  # the batch order
    net.fit(X, y)
    history = [{"epoch": int(row["epoch"]), "loss": float(row["train_loss"]), "sec": float(row["dur"])}
               for row in net.history]
    return net.module_.eval(), history


def logits(network: MultiExitNetwork, X: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    network.eval()
    with torch.inference_mode():
        return torch.cat([network(X[i : i + batch_size]) for i in range(0, len(X), batch_size)]).numpy()


def head_latency(network: MultiExitNetwork, X: torch.Tensor, n_warmup: int, n_repeats: int) -> np.ndarray:
    """Median over images of each head's own wall-clock milliseconds, at batch size 1."""
    times = []
    network.eval()
    with torch.inference_mode():
        for i in range(n_warmup + n_repeats):
            state, row = None, []
            for k, head in enumerate(network.heads):
                state = network.run_stage(k, state, X[i % len(X)][None])
                start = time.perf_counter()
                head(state)
                row.append(time.perf_counter() - start)
            if i >= n_warmup:
                times.append(row)
    return np.median(times, axis=0) * 1000.0


def head_flops(network: MultiExitNetwork, X: torch.Tensor) -> np.ndarray:
    counts, state = [], None
    network.eval()
    with torch.inference_mode():
        for k, head in enumerate(network.heads):
            state = network.run_stage(k, state, X[:1])
            with FlopCounterMode(display=False) as counter:
                head(state)
            counts.append(counter.get_total_flops())
    return np.asarray(counts, dtype=np.float64)


def measure_costs(network: MultiExitNetwork, X_test: torch.Tensor, args) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cumulative, heads = [], []
        for _ in range(args.latency_passes):  # interleaved, so both see the same machine state
            cumulative.append(measure_latency(
                network, X_test, batch_size=1, n_warmup=args.latency_warmup, n_repeats=args.latency_repeats
            ))
            heads.append(head_latency(network, X_test, args.latency_warmup, args.latency_repeats))
    finally:
        torch.set_num_threads(threads)
    return {
        "ms": np.median(cumulative, axis=0),
        "ms_passes": np.asarray(cumulative),
        "head_ms": np.median(heads, axis=0),
        "head_ms_passes": np.asarray(heads),
        "flops": count_flops(network, X_test[:1]),
        "head_flops": head_flops(network, X_test),
    }


def accuracy(scores: np.ndarray, y: np.ndarray) -> list[float]:
    return [float(a) for a in (scores.argmax(axis=2) == y[:, None]).mean(axis=0)]


def build(n_blocks: int, data: dict, args, say) -> Path:
    provenance = Provenance.start("benchmarks/make_deep_cnn_logits.py", args.argv)
    weights = None if args.models is None else args.models / f"fashion_cnn{n_blocks}.pt"
    clock = time.perf_counter()
    from_cache = weights is not None and weights.exists()
    if from_cache:
        network = multi_exit_cnn(**architecture(n_blocks))
        saved = torch.load(weights)
        network.load_state_dict(saved["state_dict"])
        network.eval()
        history = saved["history"]
        say(f"K={n_blocks}: weights read from {weights}")
    else:
        network, history = train(n_blocks, *data["train"], args.epochs, args.quiet)
        if weights is not None:
            weights.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"state_dict": network.state_dict(), "history": history}, weights)
    train_s = time.perf_counter() - clock
    (X_val, y_val), (X_test, y_test) = data["val"], data["test"]
    val_logits, test_logits = logits(network, X_val), logits(network, X_test)
    say(f"K={n_blocks}: val accuracy {np.round(accuracy(val_logits, y_val), 4)}; measuring costs...")
    clock = time.perf_counter()
    costs = measure_costs(network, X_test, args)
    costs_s = time.perf_counter() - clock
    provenance.finish()
    n_ship = args.ship
    shipped = {"val": accuracy(val_logits[:n_ship], y_val[:n_ship]),
               "test": accuracy(test_logits[:n_ship], y_test[:n_ship])}
    arch = architecture(n_blocks)
    meta = {
        "name": f"fashion_cnn{n_blocks}",
        "dataset": "Fashion-MNIST (official idx files shipped in the Debian package dataset-fashion-mnist, "
        "eenet_sklearn.datasets.load_fashion_mnist)",
        "n_classes": 10,
        "K": n_blocks,
        "splits": {
            "train": "the first 50,000 of the 60,000 official training images permuted by "
            "numpy.random.RandomState(1) (the permutation of fashion_cnn4)",
            "val": f"the first {n_ship} of the other 10,000 official training images, in permutation order "
            "(never used in training); the same images, in the same order, as the first rows of "
            "fashion_cnn4's val",
            "test": f"the first {n_ship} official test images (the first rows of fashion_cnn4's test)",
        },
        "architecture": f"eenet_sklearn.nn.multi_exit_cnn(**{json.dumps(arch)}): block k = 3x3 convolution "
        "(no bias) + batch norm + ReLU; 2x2 max pooling after the blocks in pool_after "
        "(28 -> 14 -> 7 -> 3); exit k after block k = adaptive average pooling to 2x2 + "
        "Linear(4 * width_k, 10)",
        "widths": arch["widths"],
        "pool_after": list(arch["pool_after"]),
        "n_params": int(sum(p.numel() for p in network.parameters())),
        "training": {
            "recipe": "eenet_sklearn.nn.MultiExitClassifier (DepthWeightedLoss: exit k weighted k + 1), "
            "AdamW lr 1e-3 (constant), batch 128, shuffled, no validation split, no augmentation, "
            "pixels / 255, torch.manual_seed(1) before the network is built and before training",
            "epochs": len(history),
            "torch_threads": args.threads,
            "epoch_logs": history,
            "weights_read_from_an_earlier_run": from_cache,
        },
        "seed": SEED,
        "accuracy_all_10000": {"val": accuracy(val_logits, y_val), "test": accuracy(test_logits, y_test)},
        "val_acc_per_exit": shipped["val"],
        "test_acc_per_exit": shipped["test"],
        "costs_ms": [float(c) for c in costs["ms"]],
        "costs_ms_passes": costs["ms_passes"].tolist(),
        "costs_flops": [float(c) for c in costs["flops"]],
        "head_costs_ms": [float(c) for c in costs["head_ms"]],
        "head_costs_ms_passes": costs["head_ms_passes"].tolist(),
        "head_costs_flops": [float(c) for c in costs["head_flops"]],
        "cost_method": {
            "ms": f"eenet_sklearn.nn.measure_latency(network, test images, batch_size=1, "
            f"n_warmup={args.latency_warmup}, n_repeats={args.latency_repeats}), torch.set_num_threads(1), "
            f"inference mode, {args.latency_passes} passes, the shipped value the median over the passes "
            "(per pass: the sum over exits 0..k of the median per-image increment, block k and head k)",
            "flops": "eenet_sklearn.nn.count_flops at batch size 1 "
            "(torch.utils.flop_counter.FlopCounterMode: convolutions and matrix products, 2 FLOPs per "
            "multiply-add; batch norm, ReLU and pooling not counted)",
            "head_ms": "exit k's head alone (pooling + linear), one perf_counter interval around each "
            "head call while the network runs block by block at batch size 1 on the same test images, "
            "median over the images, then over the passes (measured in the same passes as costs_ms)",
            "head_flops": "FlopCounterMode around exit k's head call alone, batch size 1",
            "machine_load": "the CPU was shared with other jobs: absolute milliseconds vary by tens of "
            "percent from run to run, ratios between exits much less",
        },
        "runtime_s": {"training": train_s, "costs": costs_s, "total": provenance.wall_s},
        "provenance": provenance.as_dict(),
        "logits": "raw pre-softmax outputs of each exit head, shape (N, K, C)",
        "logits_dtype": "float32",
    }
    out = args.out_dir / f"fashion_cnn{n_blocks}.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        val_logits=val_logits[:n_ship].astype(np.float32),
        val_labels=y_val[:n_ship].astype(np.int64),
        test_logits=test_logits[:n_ship].astype(np.float32),
        test_labels=y_test[:n_ship].astype(np.int64),
        costs_ms=costs["ms"].astype(np.float64),
        costs_flops=costs["flops"].astype(np.float64),
        head_costs_ms=costs["head_ms"].astype(np.float64),
        head_costs_flops=costs["head_flops"].astype(np.float64),
        meta=np.asarray(json.dumps(meta)),
    )
    say(
        f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) in {provenance.wall_s / 60:.1f} min\n"
        f"  accuracy val  {np.round(shipped['val'], 4)}\n  accuracy test {np.round(shipped['test'], 4)}\n"
        f"  costs_ms {np.round(costs['ms'], 4)}\n  head_costs_ms {np.round(costs['head_ms'], 4)}\n"
        f"  costs_flops {costs['flops']}\n  head_costs_flops {costs['head_flops']}"
    )
    return out


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[16, 12, 8], choices=sorted(GROUPS))
    parser.add_argument("--out-dir", type=Path, default=DATA)
    parser.add_argument("--models", type=Path, help="trained weights: read if there, else written")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads while training")
    parser.add_argument("--ship", type=int, default=4000, help="val and test rows kept in the files")
    parser.add_argument("--latency-warmup", type=int, default=50)
    parser.add_argument("--latency-repeats", type=int, default=300)
    parser.add_argument("--latency-passes", type=int, default=3)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    args.argv = argv
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    torch.set_num_threads(args.threads)
    data = splits()
    return [build(n_blocks, data, args, say) for n_blocks in args.blocks]


if __name__ == "__main__":
    main()
