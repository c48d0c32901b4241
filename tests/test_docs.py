"""The documentation: the API reference covers the public names, the example notebook runs,
the doctests are collected, and the site builds without a warning."""

from __future__ import annotations

import base64
import importlib
import importlib.util
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "docs" / "examples" / "quickstart.ipynb"
API_DOCS = ROOT / "docs" / "api"

#: The public modules; every other module of the package starts with an underscore.
PUBLIC_MODULES = (
    "eenet_sklearn",
    "eenet_sklearn.base",
    "eenet_sklearn.metrics",
    "eenet_sklearn.plotting",
    "eenet_sklearn.datasets",
    "eenet_sklearn.nn",
    "eenet_sklearn.online",
)

#: A mkdocstrings directive, ``::: path``, with its indented YAML options.
_DIRECTIVE = re.compile(r"^::: *(?P<path>[\w.]+)[ \t]*\n(?P<options>(?:(?:[ \t]+.*)?\n)*)", re.MULTILINE)


def _resolve(path: str) -> object:
    """The object a dotted path names: a module, or an attribute of one."""
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError:
        module, _, name = path.rpartition(".")
        return getattr(importlib.import_module(module), name)


def documented_paths(api_dir: Path) -> dict[int, str]:
    """The objects the API pages render (by ``id``), each with the path it is rendered under.

    A ``::: module`` directive with a ``members`` list renders those members, one without
    renders every name of the module's ``__all__``; ``::: module.Name`` renders that object.
    """
    yaml = pytest.importorskip("yaml")
    documented: dict[int, str] = {}
    for page in sorted(api_dir.glob("*.md")):
        for match in _DIRECTIVE.finditer(page.read_text(encoding="utf-8") + "\n"):
            path = match["path"]
            options = (yaml.safe_load(textwrap.dedent(match["options"])) or {}).get("options", {})
            target = _resolve(path)
            if not hasattr(target, "__path__") and not hasattr(target, "__file__"):  # not a module
                documented[id(target)] = path
                continue
            members = options.get("members", getattr(target, "__all__", []))
            for name in members:
                # A listed member that does not exist raises here (mkdocstrings would skip it).
                documented[id(getattr(target, name))] = f"{path}.{name}"
    return documented


def missing_from_api_docs(api_dir: Path) -> list[str]:
    """Every ``module.name`` of a public ``__all__`` whose object no API page renders."""
    documented = documented_paths(api_dir)
    missing = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        assert hasattr(module, "__all__"), f"{module_name} has no __all__"
        missing += [f"{module_name}.{name}" for name in module.__all__
                    if id(getattr(module, name)) not in documented]
    return missing


def test_every_public_name_is_in_the_api_reference() -> None:
    assert missing_from_api_docs(API_DOCS) == []


def test_api_coverage_check_catches_a_missing_name(tmp_path: Path) -> None:
    for page in API_DOCS.glob("*.md"):
        text = page.read_text(encoding="utf-8")
        (tmp_path / page.name).write_text(text.replace("        - budget_curve\n", ""), encoding="utf-8")
    assert missing_from_api_docs(tmp_path) == ["eenet_sklearn.metrics.budget_curve"]
    # A page documenting a whole module without a members list covers its __all__.
    (tmp_path / "metrics.md").write_text("# Metrics\n\n::: eenet_sklearn.metrics\n", encoding="utf-8")
    assert missing_from_api_docs(tmp_path) == []
    (tmp_path / "policies.md").unlink()
    assert "eenet_sklearn.EarlyExitPolicy" in missing_from_api_docs(tmp_path)


def test_public_modules_are_the_only_public_ones() -> None:
    # Every module of the package is either listed as public here or private (underscored).
    package = ROOT / "eenet_sklearn"
    for source in package.rglob("*.py"):
        parts = source.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(part.startswith("_") and part != "__main__" for part in parts) or parts[-1] == "__main__":
            continue
        name = ".".join(parts)
        assert name in PUBLIC_MODULES or name == "eenet_sklearn.data", f"{name} is public but not listed"


def test_doctests_run_with_the_suite() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    options = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["pytest"]
    options = options["ini_options"]
    assert "--doctest-modules" in options["addopts"].split()
    assert "eenet_sklearn" in options["testpaths"]


def test_notebook_is_stored_without_outputs() -> None:
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


def test_notebook_runs_without_errors() -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel runs this interpreter (jupyter_client maps the python3 kernel's "python" to
    # sys.executable), so the notebook sees the package under test. A failing cell raises.
    client = nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()
    errors = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if output.output_type == "error"]
    assert not errors


def test_site_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("material")
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    # The first build (or one after the package changed) runs the notebook and fits the
    # figures' policies, about a minute on two idle cores; later builds take them from a cache.
    result = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # --strict fails on warnings already; this also catches any a plugin logs without failing.
    assert not re.search(r"^WARNING\s+-", result.stderr, flags=re.MULTILINE), result.stderr
    site = tmp_path / "site"
    assert (site / "api" / "policies" / "index.html").is_file()

    # Every public name has its rendered entry (an anchor mkdocstrings gives each object).
    api_html = "".join(page.read_text(encoding="utf-8") for page in (site / "api").rglob("*.html"))
    anchors = set(re.findall(r'id="(eenet_sklearn[\w.]*)"', api_html))
    expected = set(documented_paths(API_DOCS).values())
    assert expected <= anchors, sorted(expected - anchors)
    assert "eenet_sklearn.base.BaseExitPolicy.decide_at_exit" in anchors

    # The user guide's figures, made from the shipped data at build time, are in the pages.
    for figure, page in [
        ("budget_curve.png", "user-guide/baselines"),
        ("exit_distribution.png", "user-guide/costs-and-budgets"),
        ("early_exit_speed.png", "user-guide/deployment"),
    ]:
        png = (site / "figures" / figure).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000, figure
        assert f"figures/{figure}" in (site / page / "index.html").read_text(encoding="utf-8"), page

    # The quickstart notebook is rendered with its outputs: printed text and the drawn curves.
    notebook_page = (site / "examples" / "quickstart" / "index.html").read_text(encoding="utf-8")
    assert "test mean cost" in notebook_page and "the loaded policy makes the same decisions" in notebook_page
    assert "quickstart_files/output_0.png" in notebook_page
    assert (site / "examples" / "quickstart_files" / "output_0.png").read_bytes().startswith(b"\x89PNG")


def _hooks():
    """The docs' build hooks, imported from docs/_ext."""
    pytest.importorskip("mkdocs")
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "_ext" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook_rendering_keeps_text_and_images_and_refuses_errors() -> None:
    png = b"\x89PNG\r\n\x1a\n fake image"
    notebook = {"cells": [
        {"cell_type": "markdown", "source": ["# Title\n", "Some *text*."]},
        {"cell_type": "code", "source": "print('hello')\nx = 1", "outputs": [
            {"output_type": "stream", "name": "stdout", "text": ["hello\n"]},
        ]},
        {"cell_type": "code", "source": "draw()", "outputs": [
            {"output_type": "display_data", "data": {"image/png": base64.b64encode(png).decode(),
                                                     "text/plain": "<Figure>"}},
            {"output_type": "execute_result", "data": {"text/plain": ["3.0"]}},
        ]},
        {"cell_type": "code", "source": "", "outputs": []},
    ]}
    page, images = _hooks().notebook_markdown(notebook, "nb_files")
    assert images == {"nb_files/output_0.png": png}
    assert "# Title\nSome *text*." in page  # markdown cells are kept as they are
    assert "```python\nprint('hello')\nx = 1\n```\n\n```text\nhello\n```" in page
    assert "![Output of the cell above](nb_files/output_0.png)" in page
    assert "```text\n3.0\n```" in page and "<Figure>" not in page
    assert page.count("```python") == 2  # the empty cell is left out

    notebook["cells"].append({"cell_type": "code", "source": "1 / 0", "outputs": [
        {"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero", "traceback": []},
    ]})
    with pytest.raises(RuntimeError, match="cell 4: ZeroDivisionError: division by zero"):
        _hooks().notebook_markdown(notebook, "nb_files")
