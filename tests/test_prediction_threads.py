"""Prediction runs its row blocks on threads, and that changes no bit of any result."""

from __future__ import annotations

import contextlib
import threading
import time
import warnings

import joblib
import numpy as np
import pytest
import threadpoolctl
from numpy.testing import assert_array_equal

from eenet_sklearn import (
    AnytimeEnsemble,
    EarlyExitPolicy,
    EntropyPolicy,
    FixedExitPolicy,
    LearnedScorePolicy,
    MaxProbPolicy,
    PatiencePolicy,
)
from eenet_sklearn import _decider as decider_module
from eenet_sklearn import base as base_module
from eenet_sklearn._decider import _block_threads, row_product, run_row_blocks
from eenet_sklearn.datasets import make_exit_logits

COSTS = [1.0, 2.0, 3.0, 4.0]
X, Y = make_exit_logits(3000, n_exits=4, n_classes=6, random_state=11)
NEW, _ = make_exit_logits(2500, n_exits=4, n_classes=6, random_state=12)

POLICIES = {
    "MaxProb": lambda: MaxProbPolicy(costs=COSTS, budget=2.0),
    "Entropy": lambda: EntropyPolicy(costs=COSTS, budget=2.0),
    "Patience": lambda: PatiencePolicy(costs=COSTS, budget=2.0),
    "Fixed": lambda: FixedExitPolicy(costs=COSTS, budget=2.0),
    "LearnedScore": lambda: LearnedScorePolicy(costs=COSTS, budget=2.0),
    "EENet": lambda: EarlyExitPolicy(costs=COSTS, budget=2.0, max_epochs=2, random_state=0),
    "Anytime(EENet)": lambda: AnytimeEnsemble(
        EarlyExitPolicy(costs=COSTS, budget=2.0, max_epochs=2, random_state=0)
    ),
}


@pytest.fixture
def small_blocks(monkeypatch):
    # Many row blocks from a few thousand rows, so that several threads take part.
    monkeypatch.setattr(base_module, "_CHUNK_VALUES", 96 * 4 * 6)
    monkeypatch.setattr(base_module, "_MIN_CHUNK_ROWS", 1)


@pytest.mark.parametrize("name", POLICIES)
def test_threaded_prediction_equals_the_single_thread_bit_for_bit(name, small_blocks) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small fitting set
        policy = POLICIES[name]().fit(X, Y)  # fitting's scores are threaded too
    assert len(policy._chunk_rows(len(NEW))) >= 20
    with threadpoolctl.threadpool_limits(2, user_api="blas"):  # whatever earlier tests left
        assert _block_threads(20) == min(2, joblib.cpu_count())
        threaded = [policy.predict_exit(NEW), policy.predict_proba(NEW), policy.exit_scores(NEW)]
    with threadpoolctl.threadpool_limits(1):  # the user's say: one thread
        assert _block_threads(20) == 1
        serial = [policy.predict_exit(NEW), policy.predict_proba(NEW), policy.exit_scores(NEW)]
    for got, expected in zip(threaded, serial, strict=True):
        assert_array_equal(got, expected)
    # And as the rows decide alone (the blocks' boundaries change nothing).
    for row in (0, 95, 96, 1234, len(NEW) - 1):
        assert policy.predict_exit(NEW[row : row + 1])[0] == threaded[0][row]


def test_the_thread_count_follows_the_blas_limit_and_the_cpus() -> None:
    assert _block_threads(1) == 1
    assert _block_threads(0) == 1
    assert 1 <= _block_threads(1000) <= joblib.cpu_count()
    with threadpoolctl.threadpool_limits(1):
        assert _block_threads(1000) == 1
    if joblib.cpu_count() >= 2:
        with threadpoolctl.threadpool_limits(2, user_api="blas"):
            assert _block_threads(1000) == 2


@pytest.mark.skipif(joblib.cpu_count() < 2, reason="one CPU: the blocks run on the calling thread")
@pytest.mark.parametrize("calls_blas", [True, False])
def test_blocks_run_on_several_threads_with_one_blas_thread_where_they_call_blas(calls_blas: bool) -> None:
    # The BLAS threads each block sees, read in the block's own thread: one where the
    # blocks call BLAS (EENet's products), the process's own where they call none (the
    # MSDNet rule), whose limit prediction then leaves alone.
    threads, blas_threads = set(), set()
    lock = threading.Lock()
    weight = np.ones((5, 3))
    inputs = np.ones((decider_module._ONE_THREAD_FROM, 5))

    def work(rows: slice) -> None:
        info = threadpoolctl.threadpool_info()
        with lock:
            threads.add(threading.get_ident())
            blas_threads.update(pool["num_threads"] for pool in info if pool["user_api"] == "blas")
        row_product(inputs, weight)
        time.sleep(0.002)

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        run_row_blocks(work, [slice(i, i + 10) for i in range(0, 400, 10)], 400, calls_blas=calls_blas)
    assert len(threads) >= 2
    assert blas_threads == ({1} if calls_blas else {2})


def test_an_error_in_a_block_stops_the_blocks_not_yet_started() -> None:
    started = []

    def work(rows: slice) -> None:
        started.append(rows.start)
        if rows.start == 30:
            raise ValueError("block 3 failed")
        time.sleep(0.002)

    blocks = [slice(i, i + 10) for i in range(0, 5000, 10)]
    with pytest.raises(ValueError, match="block 3 failed"):
        run_row_blocks(work, blocks, 5000)
    assert len(started) < len(blocks) // 2


def _pool_threads() -> dict[str, int]:
    return {pool["user_api"]: pool["num_threads"] for pool in threadpoolctl.threadpool_info()}


@contextlib.contextmanager
def _two_threads_not_owned():
    # 2 threads per pool, set from this thread but not owned by it: with threadpoolctl
    # >= 3.6 a `with threadpool_limits` held here would make the other threads' limits
    # no-ops, and the tests vacuous.
    start = threadpoolctl.threadpool_limits(2)
    decider_module._let_this_thread_set_blas()
    try:
        yield
    finally:
        start.restore_original_limits()
        decider_module._let_this_thread_set_blas()


def test_calls_from_several_threads_at_once_leave_the_thread_pools_as_they_found_them() -> None:
    # A server's request threads, or a threading joblib backend, predict at the same time:
    # each call limits the pools to one thread while it runs (a process-wide limit where
    # BLAS has no per-thread one). Limits entered and left out of order (plain
    # threadpool_limits contexts) would leave them at 1.
    import torch  # noqa: F401  (loads OpenMP, the other pool the library limits)

    from eenet_sklearn._decider import one_thread

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        policy = MaxProbPolicy(costs=COSTS, budget=2.0).fit(X, Y)
    rows = np.concatenate([NEW] * 2)  # more than one block of 1024 rows or more
    expected = policy.predict_exit(rows)
    with _two_threads_not_owned():
        before = _pool_threads()
        assert set(before.values()) == {2}
        errors: list[BaseException] = []

        def serve(seed: int) -> None:
            try:
                for i in range(120):
                    with one_thread((None, "openmp", "blas")[(seed + i) % 3]):
                        time.sleep(0.0005)  # the other threads enter and leave meanwhile
                    if i % 20 == 0:
                        assert_array_equal(policy.predict_exit(rows), expected)
            except BaseException as error:  # reported below, in the main thread
                errors.append(error)

        workers = [threading.Thread(target=serve, args=(seed,)) for seed in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert not errors
        assert _pool_threads() == before


def _overlap(predict, pause_in, pause_at: str, monkeypatch) -> dict[str, int]:
    """Run ``predict`` on a thread, paused once at ``pause_in.pause_at``; meanwhile this
    thread enters a user's ``threadpool_limits(1, "blas")``, which it leaves after the
    prediction ends (as scikit-learn does internally). The pools' threads at the end."""
    paused, resume = threading.Event(), threading.Event()
    real = getattr(pause_in, pause_at)

    def pause() -> None:
        if not paused.is_set():
            paused.set()
            assert resume.wait(30)

    def pausing(*args, **kwargs):
        pause()
        return real(*args, **kwargs)

    monkeypatch.setattr(pause_in, pause_at, pausing)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            predict()
        except BaseException as error:  # reported below, in the main thread
            errors.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    assert paused.wait(30)
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        resume.set()
        worker.join()
    assert not errors
    return _pool_threads()


def test_a_users_blas_limit_entered_during_a_prediction_leaves_the_pools_as_they_were(monkeypatch) -> None:
    # MaxProb's step calls no BLAS: its prediction leaves the process's BLAS limit alone,
    # so a user's limit entered meanwhile records and restores the user's own.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        policy = MaxProbPolicy(costs=COSTS, budget=2.0).fit(X, Y)
    rows = np.concatenate([NEW] * 2)  # more than _ONE_THREAD_FROM rows
    with _two_threads_not_owned():
        before = _pool_threads()
        assert before["blas"] == 2
        after = _overlap(lambda: policy.predict_exit(rows), base_module.ExitDecider, "_run", monkeypatch)
    assert after == before
