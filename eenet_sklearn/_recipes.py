"""The multi-exit networks the demo and ``benchmarks/early_exit_speed.py`` train, in one place.

- A multi-exit CNN (:func:`~eenet_sklearn.nn.multi_exit_cnn`) on 28x28 grey images
  (MNIST, Fashion-MNIST), all exits trained jointly: :func:`image_inputs`,
  :func:`train_image_cnn`.
- The packaged MiniLM-L6 sentence encoder with exits after some layers, frozen, its heads
  trained on Rotten Tomatoes review snippets: :func:`movie_review_splits`,
  :func:`train_encoder_heads`.

Training is seeded (``torch.manual_seed(0)`` before the network is built), so that a
recipe gives the same network for the same data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .datasets import load_movie_reviews


def image_inputs(images: np.ndarray) -> torch.Tensor:
    """Network inputs from grey images: ``(n, 1, height, width)`` float32 in ``[0, 1]``.

    Parameters
    ----------
    images : ndarray of shape (n_samples, height, width), uint8

    Returns
    -------
    Tensor of shape (n_samples, 1, height, width), float32
    """
    return torch.from_numpy(images[:, None].astype(np.float32) / 255.0)


def train_image_cnn(X: torch.Tensor, y: np.ndarray, *, widths: Sequence[int], epochs: int, verbose: bool):
    """A multi-exit CNN for 10 classes, trained on ``(X, y)`` with lr 3e-3, no validation split.

    Parameters
    ----------
    X : Tensor of shape (n_samples, 1, height, width)
        Inputs from :func:`image_inputs`.
    y : ndarray of shape (n_samples,)
        Class indices in ``0..9``.
    widths : sequence of int
        Channels of each stage; one stage, and one exit, per entry.
    epochs : int
        Training epochs.
    verbose : bool
        Print skorch's epoch log.

    Returns
    -------
    MultiExitClassifier
        The fitted network.
    """
    from .nn import MultiExitClassifier, multi_exit_cnn

    torch.manual_seed(0)
    net = MultiExitClassifier(
        multi_exit_cnn(n_classes=10, widths=tuple(widths)),
        max_epochs=epochs, lr=3e-3, train_split=None, verbose=int(verbose),
    )
    return net.fit(X, y)


def movie_review_splits(tokenizer, sizes: Sequence[int], *, max_length: int, seed: int = 0):
    """Disjoint random splits of the movie-review snippets, tokenized.

    Parameters
    ----------
    tokenizer : Hugging Face tokenizer
        As :func:`~eenet_sklearn.nn.load_encoder` returns it.
    sizes : sequence of int
        Number of snippets in each split (training, held-out, test, ...).
    max_length : int
        Tokens kept per snippet.
    seed : int, default=0
        Seed of the random order the splits are cut from.

    Returns
    -------
    list of (dict of Tensor, ndarray of shape (size,))
        Each split's token tensors and labels (1: fresh, 0: rotten).

    Raises
    ------
    ValueError
        If the sizes add up to more snippets than there are.
    """
    from .nn import tokenize

    texts, labels = load_movie_reviews()
    if sum(sizes) > len(texts):
        raise ValueError(
            f"sizes must add up to at most {len(texts)}, the number of snippets, "
            f"got {' + '.join(str(size) for size in sizes)} = {sum(sizes)}."
        )
    order = np.random.default_rng(seed).permutation(len(texts))
    bounds = np.cumsum(sizes)
    return [
        (tokenize(tokenizer, [texts[i] for i in rows], max_length=max_length), labels[rows])
        for rows in np.split(order[: bounds[-1]], bounds[:-1])
    ]


def train_encoder_heads(model, X, y: np.ndarray, *, exit_layers: Sequence[int], epochs: int, verbose: bool):
    """Exits after ``exit_layers`` of a frozen encoder, their 2-class heads trained on ``(X, y)``.

    Trained with lr 1e-3, batches of 32, no validation split.

    Parameters
    ----------
    model : Hugging Face encoder
        As :func:`~eenet_sklearn.nn.load_encoder` returns it.
    X : dict of Tensor
        Token tensors from :func:`movie_review_splits`.
    y : ndarray of shape (n_samples,)
        Labels 0 or 1.
    exit_layers : sequence of int
        The layers after which an exit is placed (1-based).
    epochs : int
        Training epochs of the heads.
    verbose : bool
        Print skorch's epoch log.

    Returns
    -------
    MultiExitClassifier
        The fitted network.
    """
    from .nn import MultiExitClassifier, multi_exit_encoder

    torch.manual_seed(0)
    network = multi_exit_encoder(model, list(exit_layers), n_classes=2)
    net = MultiExitClassifier(
        network, train_backbone=False, max_epochs=epochs, lr=1e-3, batch_size=32,
        train_split=None, verbose=int(verbose),
    )
    return net.fit(X, y)
