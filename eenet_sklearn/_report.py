"""What the command line and the demo show: the budget-curve table and plot, and plain output.

One home for the markdown table of :func:`~eenet_sklearn.metrics.budget_curve` rows,
their plot with :class:`~eenet_sklearn.plotting.BudgetCurveDisplay`, and the stream
wrapper that keeps colour codes out of output that does not go to a terminal.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from ._atomic import atomic_write


def exit_percentages(fractions: Iterable[float]) -> str:
    """``"41 / 30 / 19 / 10"``: the percentage of samples leaving at each exit."""
    return " / ".join(f"{100 * fraction:.0f}" for fraction in fractions)


def budget_curve_table(rows: Sequence[Mapping], costs: np.ndarray, unit: str | None = None) -> str:
    """Rows of :func:`~eenet_sklearn.metrics.budget_curve` as a markdown table.

    Parameters
    ----------
    rows : sequence of dict
        With ``policy``, ``budget``, ``accuracy``, ``mean_cost`` and ``exit_fractions``.
    costs : ndarray of shape (n_exits,)
        The exits' costs, to give each budget's position between the first and the last.
    unit : str, default=None
        The unit of the costs, shown in the headers (``"ms"``); ``None`` when unknown.

    Returns
    -------
    str
        The table, one line per row, without a final newline.
    """
    suffix = f" ({unit})" if unit else ""
    lines = [
        f"| budget{suffix} | position | policy | accuracy | mean cost{suffix} | cost / budget | exits (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        position = (row["budget"] - costs[0]) / (costs[-1] - costs[0])
        lines.append(
            f"| {row['budget']:.6g} | {position:.3f} | {row['policy']} | {row['accuracy']:.4f} "
            f"| {row['mean_cost']:.6g} | {row['mean_cost'] / row['budget']:.3f} "
            f"| {exit_percentages(row['exit_fractions'])} |"
        )
    return "\n".join(lines)


def save_budget_curve_plot(
    rows: Sequence[Mapping], path: str | Path, *, title: str, x: str = "budget", unit: str | None = None,
    caller: str,
) -> None:
    """Draw budget-curve rows with :class:`~eenet_sklearn.plotting.BudgetCurveDisplay` into a PNG.

    Parameters
    ----------
    rows : sequence of dict
        Rows of :func:`~eenet_sklearn.metrics.budget_curve` (the oracle's named ``"oracle"``).
    path : str or Path
        The PNG to write, whole or not at all (:func:`~eenet_sklearn._atomic.atomic_write`).
    title : str
        The plot's title.
    x : {"budget", "mean_cost"}, default="budget"
        The horizontal axis, as in :meth:`~eenet_sklearn.plotting.BudgetCurveDisplay.plot`.
    unit : str, default=None
        The unit of the costs, given to the horizontal axis's label.
    caller : str
        What draws, named in the error when matplotlib is missing.

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    """
    from .plotting import BudgetCurveDisplay, _import_matplotlib

    plt = _import_matplotlib(caller)
    # A file is all we draw: no window, whatever the default backend.
    plt.switch_backend("agg")
    figure, ax = plt.subplots(figsize=(6.4, 4.4))
    BudgetCurveDisplay.from_predictions(rows, ax=ax, x=x, cost_unit=unit)
    ax.set_title(title)
    try:
        with atomic_write(path) as file:
            figure.savefig(file, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(figure)


#: ANSI "select graphic rendition" sequences: colours, bold, reset.
_COLOUR_CODES = re.compile(r"\x1b\[[0-9;]*m")


class _NoColourStream:
    """A text stream that drops colour codes on the way to the stream it wraps."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(_COLOUR_CODES.sub("", text))
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


@contextlib.contextmanager
def colour_only_on_terminals() -> Iterator[None]:
    """Within the block, colour codes written to stdout or stderr are dropped unless it is a terminal.

    skorch colours the best values of its epoch log whatever the output is; in a log file
    or a pipe the codes are noise.
    """
    saved = sys.stdout, sys.stderr
    if not _is_terminal(sys.stdout):
        sys.stdout = _NoColourStream(sys.stdout)
    if not _is_terminal(sys.stderr):
        sys.stderr = _NoColourStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
