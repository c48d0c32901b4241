"""MkDocs hooks: the figures of the user guide and the quickstart notebook with its outputs.

Both are made at build time from the package and its shipped data, never stored in the
repository:

- ``figures/budget_curve.png`` and ``figures/exit_distribution.png``: EENet and the
  baselines fitted on the ``val`` split of the shipped ``fashion_cnn4`` logits
  (:func:`eenet_sklearn.datasets.load_exit_logits`) at six budgets and measured on its
  ``test`` split with :func:`eenet_sklearn.metrics.budget_curve`, drawn with the
  package's displays;
- ``figures/early_exit_speed.png``: the plot ``python benchmarks/early_exit_speed.py``
  wrote into ``benchmarks/results/`` (a 26-minute measurement, so it is copied, not re-run);
- ``examples/quickstart.md``: ``docs/examples/quickstart.ipynb`` executed with nbclient
  (in a Jupyter kernel running this interpreter) and rendered as Markdown, outputs included.

They are cached under ``.docs_cache/`` (git-ignored) and made again only when their inputs
change: this file, the package's sources and data, the notebook, the copied plot. A fresh
build takes about a minute on two CPU cores (the notebook and the fits run side by side);
a cached one a few seconds. Set ``EENET_DOCS_REBUILD=1`` to remake them anyway.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.eenet_sklearn")

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "eenet_sklearn"
NOTEBOOK = ROOT / "docs" / "examples" / "quickstart.ipynb"
SPEED_PLOT = ROOT / "benchmarks" / "results" / "early_exit_speed.png"
CACHE = ROOT / ".docs_cache"

#: Budgets of the figures, as positions between the first and the last exit's cost.
POSITIONS = (0.05, 0.15, 0.25, 0.4, 0.6, 0.8)
#: The budget (ms) of the exit-distribution figure, one of those the notebook uses.
DISTRIBUTION_BUDGET = 0.25


def _digest(*paths: Path) -> str:
    """A hash of the files' names and contents (folders: their .py, .npz and .ipynb files)."""
    digest = hashlib.sha256()
    for path in paths:
        files = [path]
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in {".py", ".npz"})
        for file in files:
            digest.update(str(file.relative_to(ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def _cached(name: str, key: str, make) -> Path:
    """``CACHE / name``, remade by ``make(folder)`` unless it was made from the same inputs."""
    folder = CACHE / name
    stamp = folder / ".inputs"
    if os.environ.get("EENET_DOCS_REBUILD") != "1" and stamp.is_file() and stamp.read_text() == key:
        return folder
    # Made aside and moved into place, so that two builds at once never see half a folder.
    scratch = CACHE / f".{name}-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        make(scratch)
        (scratch / ".inputs").write_text(key)
        shutil.rmtree(folder, ignore_errors=True)
        scratch.rename(folder)
    except OSError:
        if not stamp.is_file():  # not another build's folder that arrived first
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


# ---------------------------------------------------------------------------- figures


def make_figures(folder: Path) -> None:
    """The user guide's figures, from the shipped ``fashion_cnn4`` logits, into ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from eenet_sklearn import EarlyExitPolicy, EntropyPolicy, FixedExitPolicy, MaxProbPolicy, PatiencePolicy
    from eenet_sklearn.datasets import load_exit_logits
    from eenet_sklearn.metrics import budget_curve
    from eenet_sklearn.plotting import BudgetCurveDisplay, ExitDistributionDisplay

    torch.set_num_threads(1)  # the notebook's kernel runs beside these fits
    data = load_exit_logits("fashion_cnn4")
    costs = data.costs
    budgets = [float(costs[0] + p * (costs[-1] - costs[0])) for p in POSITIONS]
    budgets = sorted({*budgets, DISTRIBUTION_BUDGET})
    policies = {
        "EENet": EarlyExitPolicy(random_state=0),
        "MSDNet (max. probability)": MaxProbPolicy(),
        "BranchyNet (entropy)": EntropyPolicy(),
        "PABEE (patience)": PatiencePolicy(),
        "fixed exit": FixedExitPolicy(),
    }
    rows = budget_curve(
        policies, data.val_logits, data.val_labels, data.test_logits, data.test_labels, costs, budgets,
        as_frame=False,
    )

    figure, axes = plt.subplots(1, 2, figsize=(11.5, 4.2), layout="constrained")
    for ax, x in zip(axes, ("budget", "mean_cost"), strict=True):
        BudgetCurveDisplay.from_predictions(
            rows, x=x, cost_unit="ms", ax=ax, legend_loc="best" if x == "budget" else None
        )
    axes[0].set_title("Fitted for a budget on val")
    axes[1].set_title("Mean cost measured on test")
    figure.suptitle("fashion_cnn4: accuracy on test against the cost per sample")
    figure.savefig(folder / "budget_curve.png", dpi=110)
    plt.close(figure)

    chosen = {row["policy"]: row for row in rows if row["budget"] == DISTRIBUTION_BUDGET}
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True, layout="constrained")
    for ax, name in zip(axes, ("EENet", "MSDNet (max. probability)", "oracle"), strict=True):
        ExitDistributionDisplay(
            chosen[name]["exit_fractions"], costs=costs, budget=DISTRIBUTION_BUDGET, cost_unit="ms",
            name=name,
        ).plot(ax=ax, color="C0" if name == "EENet" else ("C1" if name != "oracle" else "0.3"))
        ax.set_title(f"{name}\nmean cost {chosen[name]['mean_cost']:.3f} ms, "
                     f"accuracy {chosen[name]['accuracy']:.3f}", fontsize=10)
    figure.suptitle(f"fashion_cnn4: where the test samples leave at a budget of {DISTRIBUTION_BUDGET} ms")
    figure.savefig(folder / "exit_distribution.png", dpi=110)
    plt.close(figure)

    shutil.copyfile(SPEED_PLOT, folder / "early_exit_speed.png")
    # The numbers behind the figures, for the curious and for tests.
    table = [{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in row.items()} for row in rows]
    (folder / "budget_curve.json").write_text(json.dumps(table, indent=1))


# ---------------------------------------------------------------------------- notebook


def execute_notebook(folder: Path) -> None:
    """Run the quickstart notebook and keep it, with its outputs, in ``folder``."""
    import nbclient
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel runs this interpreter (jupyter_client maps python3's "python" to sys.executable).
    client = nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=600,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    nbformat.write(notebook, folder / "quickstart.ipynb")


def notebook_markdown(notebook: dict, image_dir: str) -> tuple[str, dict[str, bytes]]:
    """An executed notebook as a Markdown page, and the images its outputs hold.

    Markdown cells are kept as they are, code cells become Python blocks, text outputs
    ``text`` blocks and images PNG files named ``{image_dir}/output_{n}.png``. An error
    output raises, so that a failing notebook fails the build.
    """
    parts: list[str] = [
        "<!-- Made at build time by docs/_ext/hooks.py from quickstart.ipynb: do not edit. -->"
    ]
    images: dict[str, bytes] = {}
    for index, cell in enumerate(notebook["cells"]):
        source = "".join(cell["source"]).strip("\n")
        if cell["cell_type"] == "markdown":
            parts.append(source)
            if index == 0:
                parts.append(
                    "The notebook, run when this site was built. Download it: "
                    "[quickstart.ipynb](quickstart.ipynb) (stored without outputs)."
                )
            continue
        if cell["cell_type"] != "code" or not source:
            continue
        parts.append(f"```python\n{source}\n```")
        for output in cell.get("outputs", []):
            kind = output["output_type"]
            if kind == "error":
                raise RuntimeError(
                    f"quickstart.ipynb, cell {index}: {output['ename']}: {output['evalue']}"
                )
            if kind == "stream":
                text = "".join(output["text"]).rstrip("\n")
                if text:
                    parts.append(f"```text\n{text}\n```")
                continue
            bundle = output.get("data", {})
            if "image/png" in bundle:
                name = f"{image_dir}/output_{len(images)}.png"
                images[name] = base64.b64decode("".join(bundle["image/png"]))
                parts.append(f"![Output of the cell above]({name})")
            elif "text/plain" in bundle:
                parts.append(f"```text\n{''.join(bundle['text/plain']).rstrip()}\n```")
    return "\n\n".join(parts) + "\n", images


# ---------------------------------------------------------------------------- hooks

_generated: dict[str, Path] = {}


def on_pre_build(config: Any, **kwargs: Any) -> None:
    """Make (or find in the cache) the figures and the executed notebook."""
    package = _digest(Path(__file__), PACKAGE)
    errors: list[BaseException] = []

    def notebook_job() -> None:
        try:
            _generated["notebook"] = _cached("notebook", _digest(NOTEBOOK) + package, execute_notebook)
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    log.info("Figures and notebook outputs: cached under %s, made again when their inputs change",
             CACHE.relative_to(ROOT))
    worker = threading.Thread(target=notebook_job, name="quickstart-notebook")
    worker.start()
    try:
        _generated["figures"] = _cached("figures", _digest(SPEED_PLOT) + package, make_figures)
    finally:
        worker.join()
    if errors:
        raise errors[0]


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    """Add the generated figures and the notebook page to the site's files."""
    for image in sorted(_generated["figures"].glob("*.png")):
        files.append(File.generated(config, f"figures/{image.name}", abs_src_path=str(image)))
    notebook = json.loads((_generated["notebook"] / "quickstart.ipynb").read_text(encoding="utf-8"))
    page, images = notebook_markdown(notebook, "quickstart_files")
    files.append(File.generated(config, "examples/quickstart.md", content=page))
    for name, data in images.items():
        files.append(File.generated(config, f"examples/{name}", content=data))
    return files
