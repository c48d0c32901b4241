"""Per-exit costs of a multi-exit network: measured latency and counted FLOPs."""

from __future__ import annotations

import time

import numpy as np
from torch.utils.flop_counter import FlopCounterMode

from ._batches import as_inputs, check_batch_size, evaluating, n_rows, resolve_network, row_slice, synchronize


def measure_latency(
    network,
    X,
    *,
    batch_size: int = 1,
    n_warmup: int = 5,
    n_repeats: int = 20,
    device=None,
) -> np.ndarray:
    """Cumulative wall-clock milliseconds per sample to reach each exit.

    Reaching exit ``k`` means running stages ``0..k`` and heads ``0..k``, as early-exit
    inference does (every exit on the way is evaluated to decide whether to leave).
    Each repeat runs one batch of ``batch_size`` consecutive samples of ``X``
    (wrapping around) and times each exit's increment, synchronising CUDA before each
    clock read; the cost of an exit is the sum of the increments' medians over the
    repeats, divided by the batch size.

    Parameters
    ----------
    network : MultiExitNetwork or fitted MultiExitClassifier
    X : tensor, ndarray or dict of them
        Representative inputs, at least ``batch_size`` samples.
    batch_size : int, default=1
        Batch size to measure at (latency per sample depends on it).
    n_warmup : int, default=5
        Untimed batches first (allocator, kernels, caches).
    n_repeats : int, default=20
        Timed batches.
    device : str or torch.device, default=None
        Where to run; ``None`` for where the network's parameters are.

    Returns
    -------
    ndarray of shape (n_exits,)
        Strictly increasing costs in milliseconds per sample: the ``costs`` a policy takes.

    Raises
    ------
    ValueError
        If ``batch_size``, ``n_warmup`` or ``n_repeats`` is not an integer in range, or
        ``X`` has fewer than ``batch_size`` samples.
    TypeError
        If ``network`` is neither a ``MultiExitNetwork`` nor a fitted ``MultiExitClassifier``.

    See Also
    --------
    count_flops : A deterministic cost: FLOPs per exit.
    early_exit_predict : Inference that pays these costs.
    """
    batch_size = check_batch_size(batch_size)
    for name, value, low in (("n_warmup", n_warmup, 0), ("n_repeats", n_repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    module, device = resolve_network(network, device)
    inputs = as_inputs(X)
    total = n_rows(inputs)
    if total < batch_size:
        raise ValueError(f"X has {total} samples, fewer than batch_size={batch_size}.")
    n_batches = total // batch_size

    increments = []
    with evaluating(module):
        for repeat in range(n_warmup + n_repeats):
            first = (repeat % n_batches) * batch_size
            batch = row_slice(inputs, slice(first, first + batch_size), device)
            amounts = []
            state = None
            for k, head in enumerate(module.heads):
                synchronize(device)
                start = time.perf_counter()
                state = module.run_stage(k, state, batch)
                head(state)
                synchronize(device)
                amounts.append(time.perf_counter() - start)
            if repeat >= n_warmup:
                increments.append(amounts)
    return np.cumsum(np.median(increments, axis=0)) * 1000.0 / batch_size


def count_flops(network, X, *, batch_size: int = 1, device=None) -> np.ndarray:
    """Cumulative forward FLOPs per sample to reach each exit, counted by ``torch.utils.flop_counter``.

    Counts what :class:`torch.utils.flop_counter.FlopCounterMode` knows (matrix
    products, convolutions, attention), on the first ``batch_size`` samples of ``X``;
    element-wise operations are not counted.

    Parameters
    ----------
    network : MultiExitNetwork or fitted MultiExitClassifier
    X : tensor, ndarray or dict of them
    batch_size : int, default=1
    device : str or torch.device, default=None

    Returns
    -------
    ndarray of shape (n_exits,)
        FLOPs per sample to reach each exit (stages and heads ``0..k``).

    Raises
    ------
    ValueError
        If ``batch_size`` is not a positive integer or ``X`` has fewer samples.
    TypeError
        If ``network`` is neither a ``MultiExitNetwork`` nor a fitted ``MultiExitClassifier``.

    See Also
    --------
    measure_latency : Measured wall-clock milliseconds per exit, what a deployment pays.
    """
    batch_size = check_batch_size(batch_size)
    module, device = resolve_network(network, device)
    inputs = as_inputs(X)
    if n_rows(inputs) < batch_size:
        raise ValueError(f"X has {n_rows(inputs)} samples, fewer than batch_size={batch_size}.")
    batch = row_slice(inputs, slice(0, batch_size), device)
    increments, state = [], None
    with evaluating(module):
        for k, head in enumerate(module.heads):
            with FlopCounterMode(display=False) as counter:
                state = module.run_stage(k, state, batch)
                head(state)
            increments.append(counter.get_total_flops())
    return np.cumsum(increments, dtype=np.float64) / batch_size
