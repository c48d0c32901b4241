"""The incremental exit decision: one exit at a time, with what the earlier exits left behind.

:class:`ExitDecider` is the one home of the arithmetic every prediction runs:
:meth:`BaseExitPolicy.predict_exit <eenet_sklearn.base.BaseExitPolicy.predict_exit>` and
its siblings run it over all the rows of a call, early-exit inference
(:func:`eenet_sklearn.nn.early_exit_predict`) and serving code run it exit by exit on the
rows still running, and :class:`~eenet_sklearn.online.BudgetController` runs it with
shifted thresholds. NumPy only: no torch, no fitting code.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral
from typing import TYPE_CHECKING, Any

import joblib
import numpy as np
import threadpoolctl

from ._features import exit_proba, exit_step_inputs
from ._validation import check_exit_outputs, describe

if TYPE_CHECKING:
    from .base import BaseExitPolicy

__all__ = ["ExitDecider", "one_thread", "padded_rows", "row_product", "run_row_blocks"]

#: Below this many rows a call runs as it is: limiting the thread pools costs more than a
#: small call can lose to contention.
_ONE_THREAD_FROM = 1024


@functools.lru_cache(maxsize=1)
def _threadpools_after(n_modules: int) -> threadpoolctl.ThreadpoolController:
    return threadpoolctl.ThreadpoolController()


def _threadpools() -> threadpoolctl.ThreadpoolController:
    """The thread pools loaded in this process (BLAS; OpenMP once torch is imported).

    Scanning them takes about a millisecond, so the scan is kept until a module is
    imported (which may load a new pool, as ``import torch`` loads OpenMP).
    """
    return _threadpools_after(len(sys.modules))


#: The BLAS pool (OpenBLAS's, as NumPy's wheels bundle) is shared by every thread of the
#: process: :func:`_one_blas_thread` counts the blocks inside a limit on it (over every
#: thread) and keeps the limiter that restores it when the last one leaves.
_BLAS_LOCK = threading.Lock()
_BLAS_DEPTH = 0
_BLAS_LIMITER: Any = None  # a threadpoolctl limiter (a private class)


def _let_this_thread_set_blas() -> None:
    # threadpoolctl >= 3.6 lets only the first thread that set OpenBLAS's limit set it
    # again, until that is cleared; the first and last block of a shared limit may run
    # on different threads (called under _BLAS_LOCK).
    clear = getattr(threadpoolctl.OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Limit BLAS to one thread, for a ``with`` block, from any number of threads at once.

    OpenBLAS's limit is the process's (its ``openblas_set_num_threads_local``, on the
    pthreads build NumPy bundles, sets it for every thread too): the first block to enter,
    on any thread, limits it, and the last to leave restores what the first found, so that
    blocks overlapping on several threads never leave it limited. The hazard that remains:
    a ``threadpoolctl.threadpool_limits`` that another thread enters while such a block
    runs reads that 1 as the limit to restore, and if it leaves after the block, BLAS
    stays at one thread. Prediction therefore takes it only for the calls whose steps call
    BLAS (:func:`run_row_blocks`).
    """
    global _BLAS_DEPTH, _BLAS_LIMITER
    with _BLAS_LOCK:
        if _BLAS_DEPTH == 0:
            _let_this_thread_set_blas()
            _BLAS_LIMITER = _threadpools().select(user_api="blas").limit(limits=1)
        _BLAS_DEPTH += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_DEPTH -= 1
            if _BLAS_DEPTH == 0:
                _let_this_thread_set_blas()
                _BLAS_LIMITER.restore_original_limits()
                _BLAS_LIMITER = None
                _let_this_thread_set_blas()


@contextlib.contextmanager
def one_thread(user_api: str | None = None) -> Iterator[None]:
    """Limit the BLAS and OpenMP thread pools to one thread, for a ``with`` block.

    The one home of the library's thread limits: the small matrix products of exit
    scoring (and of the scorer's training) lose more to handing work out to threads,
    and to contention with other processes, than they gain
    (``benchmarks/results/speed.md``, ``benchmarks/results/decision_speed.md``).
    ``user_api``: ``"blas"`` or ``"openmp"`` for one kind only; ``None`` for both.

    Safe from several threads at once (a server's request threads, a threading joblib
    backend). OpenMP's limit belongs to the calling thread, and is set and restored
    there; BLAS's as :func:`_one_blas_thread` says.
    """
    with contextlib.ExitStack() as stack:
        if user_api in (None, "openmp"):
            stack.enter_context(_threadpools().select(user_api="openmp").limit(limits=1))
        if user_api in (None, "blas"):
            stack.enter_context(_one_blas_thread())
        yield


def _block_threads(n_blocks: int) -> int:
    """Threads for ``n_blocks`` independent row blocks: at most the BLAS pool's limit and the CPUs.

    The BLAS limit is the user's say on how many threads numeric code may use (its
    default is the CPUs; ``OPENBLAS_NUM_THREADS=1``, ``threadpoolctl.threadpool_limits(1)``
    or a joblib worker's own limit lower it); ``joblib.cpu_count`` counts the CPUs this
    process may use (affinity and container quotas).
    """
    if n_blocks <= 1:  # nothing to share out: spare every call the CPU count (~0.1 ms of reads)
        return 1
    cpus = joblib.cpu_count()
    blas = [pool.num_threads for pool in _threadpools().lib_controllers if pool.user_api == "blas"]
    return max(1, min(n_blocks, min(blas, default=cpus), cpus))


def run_row_blocks(
    work: Callable[[slice], None], blocks: Sequence[slice], n_rows: int, *, calls_blas: bool = True
) -> None:
    """Call ``work`` on every block of a call's ``n_rows`` rows, on several threads where there are several.

    Prediction's row blocks are independent and each row's arithmetic does not depend
    on the other rows (:func:`row_product`), so running them on threads changes no bit
    of the result; NumPy releases the GIL in its loops, so threads take up the cores a
    single thread leaves idle (``benchmarks/results/decision_speed.md``). Each block
    runs with its thread's OpenMP pool limited to one thread (:func:`one_thread`),
    except a single block of fewer than ``_ONE_THREAD_FROM`` rows. ``calls_blas``: the
    blocks call BLAS (:func:`row_product`: EENet's and LearnedScorePolicy's steps); BLAS
    is then limited to one thread for the whole call (:func:`_one_blas_thread`, whose
    process-wide limit a call of the other policies thus leaves alone; taken around each
    product instead, it cost EENet 14% of its throughput). An exception, or Ctrl-C,
    cancels the blocks not yet started.
    """
    n_threads = _block_threads(len(blocks))  # read before BLAS is limited below
    large = n_threads > 1 or n_rows >= _ONE_THREAD_FROM
    with _one_blas_thread() if calls_blas and large else contextlib.nullcontext():
        if n_threads == 1:
            with one_thread("openmp") if large else contextlib.nullcontext():
                for rows in blocks:
                    work(rows)
            return
        _run_on_threads(work, blocks, n_threads)


def _run_on_threads(work: Callable[[slice], None], blocks: Sequence[slice], n_threads: int) -> None:
    """:func:`run_row_blocks` on ``n_threads`` threads."""

    def limited_work(rows: slice) -> None:
        with one_thread("openmp"):  # OpenMP's limit belongs to the thread that runs the block
            work(rows)

    with ThreadPoolExecutor(n_threads, thread_name_prefix="eenet-rows") as pool:
        try:
            for _ in pool.map(limited_work, blocks):
                pass
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


#: Rows of a :func:`row_product` are padded to a multiple of this: OpenBLAS's double
#: matrix-product kernels then compute every row with the same full-width kernel.
_ROW_BLOCK = 8


def padded_rows(n_rows: int) -> int:
    """The rows :func:`row_product` computes for ``n_rows``: a multiple of ``_ROW_BLOCK``."""
    return max(_ROW_BLOCK, -(-n_rows // _ROW_BLOCK) * _ROW_BLOCK)


def row_product(inputs: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``inputs @ weight`` with every row computed as it would be alone.

    A BLAS product rounds a row differently as a matrix-vector product (one row), at
    the ragged edge of a matrix product, or inside it: the number of rows decides
    which kernel sums it. Here the rows are padded with zeros to
    :func:`padded_rows` (a multiple of ``_ROW_BLOCK``), so that every row goes
    through the same matrix-product kernel, in the same order over the columns of
    ``inputs``: a row's result depends on that row and on ``weight`` alone. (Prediction
    runs it on one BLAS thread per row block: :func:`run_row_blocks`.) Checked
    on the installed BLAS by ``tests/test_row_invariant_arithmetic.py`` (single rows, every
    row count up to several blocks, every offset, default and single BLAS threads);
    several times faster than ``np.einsum``'s own loops at EENet's sizes.

    Parameters
    ----------
    inputs : ndarray of shape (n_rows, n_inputs), float64
        Pass ``padded_rows(n)`` rows (zeros after the first ``n``) to save a copy.
    weight : ndarray of shape (n_inputs, n_outputs), float64, C-ordered

    Returns
    -------
    ndarray of shape (padded_rows(n_rows), n_outputs), float64
        The product of the padded rows: row ``i < n_rows`` is ``inputs[i] @ weight``.
    """
    n_rows = inputs.shape[0]
    padded = padded_rows(n_rows)
    if padded != n_rows:
        block = np.zeros((padded, inputs.shape[1]), dtype=np.float64)
        block[:n_rows] = inputs
        inputs = block
    return np.matmul(inputs, weight)


State = dict[str, np.ndarray]


class ExitDecider:
    """The decision of a fitted policy, taken one exit at a time.

    Made by :meth:`BaseExitPolicy.exit_decider
    <eenet_sklearn.base.BaseExitPolicy.exit_decider>`. At exit ``k`` it takes exit
    ``k``'s outputs for the rows still running and the state the earlier exits left,
    and returns which rows leave, their class probabilities at ``k`` and the next
    state. Each call costs the same whatever ``k``: exits ``0..k-1`` are never
    scored again, what the decision needs of them is carried in the state.
    It needs NumPy only.

    The state is a dict of arrays with one row per sample, named in
    :attr:`state_names` (per policy:
    :class:`~eenet_sklearn.MaxProbPolicy`, :class:`~eenet_sklearn.EntropyPolicy`,
    :class:`~eenet_sklearn.FixedExitPolicy`: nothing;
    :class:`~eenet_sklearn.PatiencePolicy`: ``"run"``, the length of the current run
    of agreeing predictions, and ``"previous"``, the previous exit's prediction;
    :class:`~eenet_sklearn.EarlyExitPolicy`: ``"utilities"``, the sigmoid utilities
    of the earlier exits (one column per exit, zeros after ``k``), plus ``"votes"``
    (per class, how many earlier exits predict it) and ``"top_vote"`` when the
    scorer reads the voting measure; :class:`~eenet_sklearn.LearnedScorePolicy`:
    ``"scores"``, the earlier exits' scores, and the same vote counts).

    Every value of a row is computed from that row alone, in float64: a sample's
    decision, label and probabilities do not depend on the other rows of the call,
    on how many there are, or on the dtype of identical input values (see
    :class:`~eenet_sklearn.base.BaseExitPolicy`, "Batch invariance", and its one
    exception: a :class:`~eenet_sklearn.LearnedScorePolicy` with a user-given classifier).

    Attributes
    ----------
    thresholds : ndarray of shape (n_exits,)
        A row leaves at exit ``k`` when its exit score reaches ``thresholds[k]``
        (everybody leaves at the last exit).
    n_exits, n_classes : int
        Of the fitted policy.
    input_type : {"logits", "proba"}
        What ``outputs_k`` holds.
    classes : ndarray of shape (n_classes,)
        Label of each class column: a read-only copy of ``policy.classes_``.
    state_names : tuple of str
        The keys of the state.

    See Also
    --------
    eenet_sklearn.base.BaseExitPolicy.exit_decider : Makes one.
    eenet_sklearn.nn.early_exit_predict : Early-exit inference that drives one.

    Examples
    --------
    The loop a server runs: after exit ``k``, decide for the rows still running,
    then keep the ones that stay.

    >>> import numpy as np
    >>> from eenet_sklearn import PatiencePolicy
    >>> X = np.array([[[2.0, 0.0], [3.0, 0.0], [0.0, 1.0]],
    ...               [[0.0, 1.0], [1.0, 0.0], [0.0, 2.0]]])
    >>> policy = PatiencePolicy(costs=[1.0, 2.0, 3.0], patience=2).fit(X, [0, 1])
    >>> decider = policy.exit_decider()
    >>> decider.state_names
    ('run', 'previous')
    >>> running = np.arange(len(X))
    >>> state = decider.initial_state(len(X))
    >>> exits = np.empty(len(X), dtype=int)
    >>> for k in range(decider.n_exits):
    ...     leave, proba, state = decider.decide(k, X[running, k], state)
    ...     exits[running[leave]] = k
    ...     running, state = running[~leave], decider.keep(state, ~leave)
    >>> exits
    array([1, 2])
    >>> policy.predict_exit(X)
    array([1, 2])
    """

    def __init__(self, policy: BaseExitPolicy, thresholds: np.ndarray | None = None) -> None:
        self._policy = policy
        fitted = policy.thresholds_ if thresholds is None else thresholds
        self.thresholds = np.array(fitted, dtype=np.float64)
        self.n_exits = int(policy.n_exits_)
        self.n_classes = int(policy.n_classes_)
        self.input_type = str(policy.input_type)
        self.classes = np.array(policy.classes_)  # a copy: writing it must not relabel the policy
        self.classes.flags.writeable = False
        self.state_names = tuple(policy._step_state_names())
        # What each state array must look like beyond its rows (initial_state's layout),
        # and how errors say it.
        self._state_layout = {
            name: (
                value.shape[1:],
                value.dtype,
                f"an array of shape ({', '.join(['n_rows', *map(str, value.shape[1:])])}) and dtype "
                f"{value.dtype}, as initial_state gives",
            )
            for name, value in policy._step_initial_state(0).items()
        }
        # Derived forms of the fitted scorer (float64 copies): made once per decider.
        self._weights = policy._step_weights()
        self._reads_proba = bool(policy._step_reads_proba)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(policy={type(self._policy).__name__}(...), "
            f"n_exits={self.n_exits}, state_names={self.state_names})"
        )

    def initial_state(self, n_samples: int) -> State:
        """The state before exit 0, for ``n_samples`` rows.

        Parameters
        ----------
        n_samples : int
            Number of rows (samples) to decide, ``>= 0``.

        Returns
        -------
        dict of str to ndarray
            One array per name of :attr:`state_names`, each with ``n_samples`` rows.

        Raises
        ------
        TypeError
            If ``n_samples`` is not an integer.
        ValueError
            If ``n_samples`` is negative.
        """
        if not isinstance(n_samples, Integral) or isinstance(n_samples, bool):
            raise TypeError(f"n_samples must be an integer >= 0, got {describe(n_samples)}.")
        if n_samples < 0:
            raise ValueError(f"n_samples must be an integer >= 0, got {n_samples}.")
        return self._policy._step_initial_state(int(n_samples))

    def decide(
        self, k: int, outputs_k, state: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, State]:
        """Decide at exit ``k`` for the rows still running.

        Parameters
        ----------
        k : int
            The exit, ``0 <= k < n_exits``. Exits must be visited in order, each once,
            from the state :meth:`initial_state` gave (``k = 0``), each call with the
            state the previous one returned (through :meth:`keep`): the state does not
            say which exit it is at, and the decider does not check it. Another order
            (an exit skipped, repeated or revisited) gives wrong decisions without an
            error.
        outputs_k : array-like of shape (n_rows, n_classes)
            Exit ``k``'s logits (or probabilities with ``input_type="proba"``) of the
            rows still running, any real dtype.
        state : dict of str to ndarray
            The state for the same rows: :meth:`initial_state` at exit 0, else what the
            previous call returned, passed through :meth:`keep`. Not modified. Each
            array must be laid out as this decider's :meth:`initial_state` gives it
            (the same dimensions beyond the rows and dtype kind, float64 where it is
            float, finite): a state of another decider is refused.

        Returns
        -------
        leave : ndarray of shape (n_rows,), dtype bool
            Whether each row leaves at exit ``k`` (all true at the last exit).
        proba : ndarray of shape (n_rows, n_classes), float64
            Class probabilities at exit ``k``, columns in :attr:`classes` order.
        state : dict of str to ndarray
            The next state, for the same ``n_rows`` rows (new arrays).

        Raises
        ------
        ValueError
            If ``k`` is out of range, ``outputs_k`` is not 2-D with ``n_classes``
            columns, is not finite (or not distributions with
            ``input_type="proba"``), or ``state`` lacks a name, or one of its arrays
            has another number of rows, another shape beyond them or non-finite
            values.
        TypeError
            If ``outputs_k`` holds strings, complex numbers or other non-real values,
            ``state`` is not a dict, or one of its arrays has another dtype than
            :meth:`initial_state` gives.
        """
        scores, proba, state = self.score(k, outputs_k, state)
        return self._leave(k, scores), proba, state

    def score(
        self, k: int, outputs_k, state: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, State]:
        """Exit ``k``'s scores (what :meth:`decide` compares with ``thresholds[k]``).

        Parameters and errors as :meth:`decide`.

        Returns
        -------
        scores : ndarray of shape (n_rows,), float64
            Column ``k`` of the policy's :meth:`exit_scores
            <eenet_sklearn.base.BaseExitPolicy.exit_scores>` for these rows.
        proba : ndarray of shape (n_rows, n_classes), float64
            Class probabilities at exit ``k``.
        state : dict of str to ndarray
            The next state.
        """
        k = self._check_exit(k)
        outputs = self._check_outputs(outputs_k)
        return self._score(k, outputs, self._check_state(state, outputs.shape[0]))

    def keep(self, state: Mapping[str, np.ndarray], rows) -> State:
        """The state of the rows selected by ``rows`` (a boolean mask or indices).

        Parameters
        ----------
        state : dict of str to ndarray
        rows : array-like of bool of shape (n_rows,) or of int
            Typically ``~leave``: the rows that go on to the next exit. Integers are
            indices, as in NumPy's indexing: ``[1, 0, 1]`` selects rows 1, 0 and 1, not
            a mask (pass booleans for a mask).

        Returns
        -------
        dict of str to ndarray
            New arrays, the selected rows in order.

        Raises
        ------
        TypeError
            If ``rows`` holds neither booleans nor integers.
        IndexError
            If a boolean ``rows`` has another length than the state, or an index is
            out of range.
        """
        rows = np.asarray(rows)
        if rows.size == 0:  # [] reads as float64
            rows = rows.astype(np.intp)
        if rows.dtype.kind not in "biu":
            raise TypeError(
                f"rows must be a boolean mask or integer indices of the rows to keep, got {describe(rows)}."
            )
        if rows.dtype == bool:
            for name, value in state.items():
                if rows.shape != np.shape(value)[:1]:
                    raise IndexError(
                        f"rows is a boolean mask of shape {rows.shape}, but state[{name!r}] has "
                        f"{len(value)} rows."
                    )
            rows = np.flatnonzero(rows)
        return self._keep(state, rows)

    # --- internals (no validation): what predict_exit runs over whole chunks ---------

    def _keep(self, state: Mapping[str, np.ndarray], rows: np.ndarray) -> State:
        """:meth:`keep` of integer ``rows``."""
        # take: several times faster than boolean or fancy indexing of 2-D arrays.
        return {name: np.take(np.asarray(value), rows, axis=0) for name, value in state.items()}

    def _leave(self, k: int, scores: np.ndarray) -> np.ndarray:
        if k == self.n_exits - 1:
            return np.ones(scores.shape[0], dtype=bool)
        return scores >= self.thresholds[k]

    def _score(
        self, k: int, outputs: np.ndarray, state: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, State]:
        """Scores, probabilities and next state of validated exit-``k`` outputs."""
        scores, step_proba, next_state = self._step(k, outputs, state)
        return scores, self._proba(k, outputs, step_proba, next_state), next_state

    def _step(
        self, k: int, outputs: np.ndarray, state: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray | None, State]:
        """Scores, the probabilities the step read (or ``None``), next state.

        The probabilities are left out (no exponentials spent on them) where the
        policy's step does not read them (``_step_reads_proba``): :meth:`_run` computes
        them only when asked to return them.
        """
        log_proba, step_proba = exit_step_inputs(outputs, self.input_type, self._reads_proba)
        scores, next_state = self._policy._exit_step(k, log_proba, step_proba, dict(state), self._weights)
        return scores, step_proba, next_state

    def _proba(
        self,
        k: int,
        outputs: np.ndarray,
        step_proba: np.ndarray | None,
        next_state: State,
    ) -> np.ndarray:
        """The class probabilities predicted at exit ``k`` (:meth:`_step`'s outputs)."""
        if step_proba is None:
            step_proba = exit_proba(outputs, self.input_type)
        # What the policy predicts with at exit k: exit k's own probabilities, or (an
        # anytime ensemble) a combination of exits 0..k carried in the state.
        return self._policy._step_proba(k, step_proba, next_state)

    def _run(
        self, outputs: np.ndarray, *, all_scores: bool = False, proba: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Decide validated ``(n, n_exits, n_classes)`` outputs exit by exit.

        Returns the exits, the class probabilities at them (``None`` with
        ``proba=False``, which then spends nothing on them) and, with ``all_scores``,
        the scores at every exit (then no row is dropped after it leaves; otherwise
        rows that left are not scored again, which changes nothing for the others).
        """
        n_samples = outputs.shape[0]
        exits = np.full(n_samples, self.n_exits - 1, dtype=np.int64)
        chosen = np.empty((n_samples, self.n_classes), dtype=np.float64) if proba else None
        scores = np.empty((n_samples, self.n_exits), dtype=np.float64) if all_scores else None
        running = np.arange(n_samples)
        undecided = np.ones(n_samples, dtype=bool)  # over the running rows
        state = self._policy._step_initial_state(n_samples)
        for k in range(self.n_exits):
            if k == self.n_exits - 1 and scores is None and chosen is None:
                break  # the rows still running leave at the last exit, whatever it scores
            # Every row still running (exit 0, or all_scores): a view, not a gathered copy.
            outputs_k = outputs[:, k] if len(running) == n_samples else outputs[running, k]
            score, step_proba, state = self._step(k, outputs_k, state)
            if scores is not None:
                scores[:, k] = score
            if k == self.n_exits - 1:  # everybody still running leaves
                leave = undecided
            else:
                leave = score >= self.thresholds[k]
                leave &= undecided
            leaving = running[leave]
            exits[leaving] = k
            if chosen is not None:
                chosen[leaving] = self._proba(k, outputs_k, step_proba, state)[leave]
            if k == self.n_exits - 1:
                break
            if scores is not None:  # every row is scored at every exit
                undecided &= ~leave
            else:
                stay = np.flatnonzero(~leave)
                running, state = running[stay], self._keep(state, stay)
                undecided = undecided[stay]
                if not len(running):
                    break
        return exits, chosen, scores

    def _check_exit(self, k: object) -> int:
        if not isinstance(k, Integral) or isinstance(k, bool) or not 0 <= int(k) < self.n_exits:
            raise ValueError(f"k must be an exit index in [0, {self.n_exits - 1}], got {describe(k)}.")
        return int(k)

    def _check_outputs(self, outputs_k: object) -> np.ndarray:
        raw = outputs_k if isinstance(outputs_k, np.ndarray) else np.asarray(outputs_k)
        if raw.ndim != 2:
            raise ValueError(
                f"outputs_k must be 2-D (n_rows, n_classes), exit k's outputs of the rows still "
                f"running, got shape {raw.shape}."
            )
        if raw.shape[0] == 0:
            return np.empty((0, self.n_classes), dtype=np.float64)
        return check_exit_outputs(
            raw[:, None, :], 1, self.n_classes, self.input_type, type(self._policy).__name__, "outputs_k"
        )[:, 0]

    def _check_state(self, state: Mapping[str, np.ndarray], n_rows: int) -> State:
        """``state`` with its arrays as ndarrays, each checked against :meth:`initial_state`'s layout.

        The same dimensions beyond the ``n_rows`` rows and dtype kind (float64 for
        floats: float32 would round what is carried), finite floats: a state of another
        decider, or a mis-shaped one, would otherwise be read as other rows' values.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict of arrays from initial_state, got {describe(state)}.")
        checked = dict(state)
        for name, (trailing, dtype, expected) in self._state_layout.items():
            if name not in state:
                raise ValueError(
                    f"state lacks {name!r}: expected the keys {self.state_names} (from initial_state)."
                )
            value = state[name]
            value = value if isinstance(value, np.ndarray) else np.asarray(value)
            if value.dtype.kind != dtype.kind or (dtype.kind == "f" and value.dtype != dtype):
                raise TypeError(f"state[{name!r}] has dtype {value.dtype}; expected {expected}.")
            if value.ndim != len(trailing) + 1 or value.shape[1:] != trailing:
                raise ValueError(
                    f"state[{name!r}] has shape {value.shape}; expected {expected} "
                    "(a state of another decider?)."
                )
            if value.shape[0] != n_rows:
                raise ValueError(
                    f"state[{name!r}] has {value.shape[0]} rows but outputs_k has {n_rows}: "
                    "keep the state of the running rows with keep(state, ~leave)."
                )
            if dtype.kind == "f" and not np.isfinite(value).all():
                raise ValueError(f"state[{name!r}] contains NaN or infinity; expected {expected}.")
            checked[name] = value
        return checked
