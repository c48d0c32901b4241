"""Slicing, sizing and moving the inputs of a multi-exit network (a tensor or a dict of tensors)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from ._model import MultiExitNetwork


def as_inputs(X):
    """``X`` as a tensor or a dict of tensors (NumPy arrays are converted, not copied)."""
    if isinstance(X, dict):
        if not X:
            raise ValueError("X must not be an empty dict.")
        return {key: as_inputs(value) for key, value in X.items()}
    if isinstance(X, torch.Tensor):
        return X
    if isinstance(X, np.ndarray):
        return torch.from_numpy(X)
    raise TypeError(f"X must be a tensor, a NumPy array or a dict of them, got {type(X).__name__}.")


def n_rows(inputs) -> int:
    """Number of samples; every tensor of a dict must have the same."""
    if isinstance(inputs, dict):
        counts = {key: len(value) for key, value in inputs.items()}
        if len(set(counts.values())) != 1:
            raise ValueError(f"X's tensors must have the same number of rows, got {counts}.")
        return next(iter(counts.values()))
    return len(inputs)


def row_slice(inputs, rows: slice, device: torch.device | None = None):
    """The rows ``rows`` of a tensor or a dict of them (token tensors), moved to ``device`` if given."""
    if isinstance(inputs, dict):
        return {key: row_slice(value, rows, device) for key, value in inputs.items()}
    return inputs[rows] if device is None else inputs[rows].to(device)


def check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    return int(batch_size)


def resolve_network(network, device) -> tuple[MultiExitNetwork, torch.device]:
    """The module of a network or a fitted :class:`MultiExitClassifier`, and the device to run it on."""
    module = getattr(network, "module_", network)
    if not isinstance(module, MultiExitNetwork):
        raise TypeError(
            "network must be a MultiExitNetwork or a fitted MultiExitClassifier, "
            f"got {type(network).__name__}."
        )
    if device is None:
        first = next(module.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    return module.to(device), device


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so that a clock read measures them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def evaluating(module: torch.nn.Module) -> Iterator[None]:
    """Evaluation mode and no autograd for the block; the module's mode is restored after it."""
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        module.train(was_training)
