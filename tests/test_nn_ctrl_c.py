"""Ctrl-C aborts the joint training of a multi-exit network (skorch's partial_fit would swallow it)."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback
from torch import nn

from eenet_sklearn.nn import MultiExitClassifier, MultiExitNetwork


def _network() -> MultiExitNetwork:
    torch.manual_seed(0)
    return MultiExitNetwork(
        stages=[nn.Linear(4, 8), nn.Sequential(nn.ReLU(), nn.Linear(8, 6))],
        heads=[nn.Linear(8, 3), nn.Linear(6, 3)],
    )


class _CtrlCDuringTraining(Callback):
    """Sends this process a real SIGINT from another thread, half a second into training."""

    def __init__(self) -> None:
        self.timer: threading.Timer | None = None

    def on_train_begin(self, net, X=None, y=None, **kwargs) -> None:
        self.timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        self.timer.start()


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_a_real_sigint_aborts_the_training(method) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    max_epochs = 1_000_000  # hours of training unless interrupted
    ctrl_c = _CtrlCDuringTraining()
    net = MultiExitClassifier(
        _network(), max_epochs=max_epochs, batch_size=16, train_split=None, callbacks=[ctrl_c]
    )
    # The SIGINT is handled as Python does by default: KeyboardInterrupt in the main thread.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    start = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt) as excinfo:
            getattr(net, method)(X, y)
    finally:
        if ctrl_c.timer is not None:
            ctrl_c.timer.cancel()
            ctrl_c.timer.join()
        signal.signal(signal.SIGINT, previous)
    assert time.perf_counter() - start < 30.0  # aborted at once, not after the epochs
    # It was raised in skorch's training loop, and got through partial_fit.
    names = [entry.name for entry in excinfo.traceback]
    assert "fit_loop" in names and "partial_fit" in names
    # Training had started and was cut short.
    assert 1 <= len(net.history) < max_epochs
