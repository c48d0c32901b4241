"""Run provenance shared by the benchmarks: the command, the date and commit, the machine, the versions.

Every benchmark writes the same header lines at the top of its markdown results
(``Command:``, ``Date:``, ``Machine:``, ``Versions:``, ``Runtime:``) and the same fields
into its machine-readable results::

    provenance = Provenance.start("benchmarks/speed.py", argv)
    ...  # the runs
    provenance.finish()
    lines = provenance.lines()        # markdown
    record = provenance.as_dict()     # JSON
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

#: The packages whose versions a result depends on.
PACKAGES = ("eenet-sklearn", "numpy", "scipy", "scikit-learn", "torch", "skorch", "joblib")
#: The prefixes of the header lines, in order (``paper_comparison.py --render`` keeps them).
LINE_PREFIXES = ("Command:", "Date:", "Machine:", "Versions:", "Runtime:")


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """``python <script> <arguments>``, shell-quoted; the arguments are ``sys.argv[1:]`` when ``None``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", script, *arguments])


def cpu_model() -> str:
    """The CPU's model name (from ``/proc/cpuinfo`` on Linux), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def git_state() -> str:
    """``commit abc1234``, with ``with uncommitted changes`` when tracked files differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return f"commit {head}" + (" with uncommitted changes" if dirty else "")


def versions() -> dict[str, str]:
    """Python's version and those of :data:`PACKAGES` (``"not installed"`` for a missing one)."""
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def _loads(values: Sequence[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


@dataclass
class Provenance:
    """Where, when and how a benchmark ran.

    Attributes
    ----------
    command : str
        The command line that ran it.
    date : datetime
        When it started, in UTC.
    load_start, load_end : tuple of float
        Load average (1, 5, 15 min) at the start and at :meth:`finish`.
    wall_s : float or None
        Wall time from :meth:`start` to :meth:`finish`, in seconds.
    """

    command: str
    date: datetime
    load_start: tuple[float, float, float]
    load_end: tuple[float, float, float] | None = None
    wall_s: float | None = None
    _clock: float = field(default=0.0, repr=False)

    @classmethod
    def start(cls, script: str, argv: Sequence[str] | None) -> Provenance:
        """Record the command (``script`` as typed, e.g. ``benchmarks/speed.py``), the date and the load."""
        return cls(
            command=command_line(script, argv),
            date=datetime.now(timezone.utc),
            load_start=os.getloadavg(),
            _clock=time.perf_counter(),
        )

    def finish(self) -> Provenance:
        """Record the wall time and the load at the end; returns ``self``."""
        self.wall_s = time.perf_counter() - self._clock
        self.load_end = os.getloadavg()
        return self

    def machine(self) -> dict:
        """CPUs, CPU model, torch's threads in this process and ``OPENBLAS_CORETYPE``."""
        return {
            "cpus": os.cpu_count(),
            "cpu": cpu_model(),
            "torch_threads": torch.get_num_threads(),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
        }

    def lines(self, *, machine_note: str = "", runtime_note: str = "") -> list[str]:
        """The markdown header lines, each ending in two spaces (a line break).

        ``machine_note`` and ``runtime_note`` are appended to the ``Machine:`` and
        ``Runtime:`` lines (start them with ", " or "; ").
        """
        machine = self.machine()
        load = f"load average (1, 5, 15 min) {_loads(self.load_start)} at start"
        if self.load_end is not None:
            load += f", {_loads(self.load_end)} at end"
        openblas = "" if machine["OPENBLAS_CORETYPE"] == "(unset)" else (
            f", OPENBLAS_CORETYPE={machine['OPENBLAS_CORETYPE']}"
        )
        lines = [
            f"Command: `{self.command}`  ",
            f"Date: {self.date:%Y-%m-%d %H:%M UTC}; {git_state()}.  ",
            f"Machine: {machine['cpus']} CPUs ({machine['cpu']}), torch with {machine['torch_threads']} "
            f"thread(s) in the main process{openblas}{machine_note}; {load}: other processes sharing the "
            "CPUs slow every timing down.  ",
            "Versions: " + ", ".join(f"{name} {version}" for name, version in versions().items()) + ".  ",
        ]
        if self.wall_s is not None:
            lines.append(f"Runtime: {self.wall_s / 60:.1f} min wall{runtime_note}.  ")
        return lines

    def as_dict(self) -> dict:
        """The provenance as plain values, for a JSON or CSV record."""
        return {
            "command": self.command,
            "date": f"{self.date:%Y-%m-%d %H:%M UTC}",
            "git": git_state(),
            "machine": self.machine(),
            "versions": versions(),
            "load_average_start": list(self.load_start),
            "load_average_end": None if self.load_end is None else list(self.load_end),
            "wall_s": self.wall_s,
        }
