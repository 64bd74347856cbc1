"""Print the third-party requirements of obflow with the given extras (from pyproject.toml), one per
line, so that an image installs its dependencies in a layer of their own, before obflow's sources:
a source change then rebuilds only the thin layer above it.
    python3 docker/requirements.py pyproject.toml capture
"""

from __future__ import annotations

import re
import sys
import tomllib


def requirements(pyproject: dict[str, object], extras: list[str]) -> list[str]:
    project = pyproject["project"]
    assert isinstance(project, dict)
    name = project["name"]
    wanted, seen, found = list(extras), set(), list(project["dependencies"])
    while wanted:
        extra = wanted.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in project["optional-dependencies"][extra]:
            self_reference = re.fullmatch(rf"{name}\[([^\]]+)\]", requirement)
            if self_reference:
                wanted.extend(part.strip() for part in self_reference.group(1).split(","))
            else:
                found.append(requirement)
    return sorted(set(found))


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as file:
        print("\n".join(requirements(tomllib.load(file), sys.argv[2:])))
