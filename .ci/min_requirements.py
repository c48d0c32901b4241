"""Print pip constraints that pin every declared dependency to its lower bound.

``make test-min`` installs the project with these constraints into ``.venv-min`` and runs the
test suite there, so each ``>=`` floor in pyproject.toml is the version actually tested. The
constraints are derived from pyproject.toml each time: a raised floor is tested without
editing anything else.

Usage: python .ci/min_requirements.py [EXTRA ...] > constraints.txt
(the core dependencies plus those of the named extras; requirements without a ``>=`` floor,
such as the exact pins of the linters, are left to pyproject.toml).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
# name, optional [extras], then the specifiers; an environment marker is not expected.
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*)$")


def floors(requirements: list[str]) -> dict[str, str]:
    """``{name: lower bound}`` for each requirement with a ``>=`` specifier."""
    result = {}
    for requirement in requirements:
        match = REQUIREMENT.match(requirement)
        if match is None or ";" in requirement:
            raise SystemExit(f"cannot read the requirement {requirement!r}")
        name, specifiers = match.group(1).lower(), match.group(2)
        for specifier in specifiers.split(","):
            specifier = specifier.strip()
            if specifier.startswith(">="):
                floor = specifier[2:].strip()
                # The highest floor wins where the core and an extra both name a package.
                if name not in result or _release(floor) > _release(result[name]):
                    result[name] = floor
    if "dask" in result:
        # dask[distributed] brings distributed, released in lockstep with dask (same version).
        result["distributed"] = result["dask"]
    return result


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def main(extras: list[str]) -> None:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"no extra named {extra!r} in {PYPROJECT.name}")
        requirements += optional[extra]
    for name, floor in sorted(floors(requirements).items()):
        print(f"{name}=={floor}")


if __name__ == "__main__":
    main(sys.argv[1:])
