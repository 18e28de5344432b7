#!/usr/bin/env python3
"""Print pip constraints that pin each runtime dependency to the oldest version its range allows.

Usage:
    python tools/oldest_constraints.py [PYPROJECT] > constraints.txt
    python tools/oldest_constraints.py --test-requirements [PYPROJECT] > test-requirements.txt

Reads [project] dependencies from PYPROJECT (default: the repository's pyproject.toml) and
prints one `name==version` line per dependency: `>=X` (or `==X`, `~=X`) becomes `==X`.
scripts/test.sh installs wanmon with these constraints into a second venv and runs part of
the suite there, so the lower ends of the declared ranges are tested, not only the newest
releases. A dependency without a lower bound (`tzdata`, `foo<3`, `foo>1`) is an error: give it
one in pyproject.toml, the oldest release that is meant to work.
With --test-requirements it prints the `test` extra to install beside them (the newest in
range), less the few tools that cannot be installed next to the oldest pins (NOT_AT_THE_OLDEST).

Needs `packaging` (any venv with pip's test tools has it: pytest depends on it).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parent.parent


def oldest_pins(dependencies: list[str]) -> list[str]:
    """`name==X` for each requirement, X its lower bound; raises ValueError if one has none."""
    pins = []
    for text in dependencies:
        req = Requirement(text)
        lows = [s.version for s in req.specifier if s.operator in (">=", "==", "~=", "===")]
        if len(lows) != 1 or "*" in lows[0]:
            raise ValueError(
                f"{text!r}: needs exactly one lower bound (>=X, ==X or ~=X) to pin the oldest version; found {len(lows)}"
            )
        if not req.specifier.contains(lows[0], prereleases=True):
            raise ValueError(f"{text!r}: its lower bound {lows[0]} is excluded by the range itself")
        marker = f" ; {req.marker}" if req.marker else ""
        # (a constraints file takes no extras: the pin is on the distribution itself)
        pins.append(f"{req.name}=={lows[0]}{marker}")
    return pins


# Test tools left out of the oldest venv, because they require a runtime dependency above its
# lower bound (so pip could not install the pins beside them), and none of the tests run there
# needs them: pysmi requires Jinja2>=3.1.3 (jinja2's lower bound is 3.1); snmpsim imports pysmi.
NOT_AT_THE_OLDEST = {"pysmi", "snmpsim"}


def test_requirements(extra: list[str]) -> list[str]:
    """The test extra less NOT_AT_THE_OLDEST, unpinned: the test tools stay the newest in range."""
    return [text for text in extra if Requirement(text).name.lower() not in NOT_AT_THE_OLDEST]


def main(argv: list[str]) -> int:
    args = argv[1:]
    tests = "--test-requirements" in args
    args = [a for a in args if a != "--test-requirements"]
    path = Path(args[0]) if args else REPO_ROOT / "pyproject.toml"
    with path.open("rb") as f:
        project = tomllib.load(f)["project"]
    if tests:
        print("\n".join(test_requirements(project["optional-dependencies"]["test"])))
        return 0
    deps = project["dependencies"]
    try:
        pins = oldest_pins(deps)
    except ValueError as e:
        print(f"oldest_constraints: {path}: {e}", file=sys.stderr)
        return 1
    print("\n".join(pins))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
