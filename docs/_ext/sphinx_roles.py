"""Griffe extension: render the docstrings' Sphinx roles as Markdown for mkdocstrings.

The docstrings follow numpydoc and scikit-learn, whose cross-references are Sphinx roles
(``:class:`~eenet_sklearn.metrics.budget_curve```); mkdocstrings would print them verbatim.
A fully qualified name of this package becomes a mkdocstrings cross-reference; any other
name (``:meth:`fit```) becomes inline code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|meth|func|attr|mod|data|obj|exc):`(~?)([\w.]+)`")


def _markdown(match: re.Match) -> str:
    short, target = match.group(1), match.group(2)
    shown = target.rsplit(".", 1)[-1] if short else target
    if target.startswith("eenet_sklearn."):
        return f"[`{shown}`][{target}]"
    return f"`{shown}`"


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring before mkdocstrings parses it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_markdown, obj.docstring.value)
