"""Fail when the execution environment would not run what this repository ships.

Checks ``execution-environment.yml`` (ansible-builder schema 3) against the repository:

- every collection that the shipped collection (roles, plugins, its playbooks) or the site's
  ``playbooks/`` call by FQCN is installed in the EE, and so is every dependency in ``galaxy.yml``;
- each collection is pinned to the version this repository is tested with (the one the ``ansible``
  package in the active virtualenv bundles);
- ansible-core, ansible-runner and the Python packages carry the pins of ``requirements.txt``;
- the ``mlfleet`` command's own dependencies (``pyproject.toml``) are in the EE;
- the EE installs the mlfleet.fleet collection and the ``mlfleet`` wheel built from this checkout.

``make lint`` runs it (then ``ansible-builder create``); exit 1 lists every problem.

    python tools/check_ee.py [ROOT]
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

import yaml

COLLECTION = Path("collections/ansible_collections/mlfleet/fleet")
# What the collection and the site run on a control node or an execution node.
SCANNED = [COLLECTION / "roles", COLLECTION / "plugins", COLLECTION / "playbooks", Path("playbooks")]
BUILTIN = {"ansible.builtin", "ansible.legacy", "mlfleet.fleet"}
REQ_LINE = re.compile(r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*==\s*([^\s;#]+)")


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement line (``PyYAML>=6`` -> ``pyyaml``)."""
    name = re.split(r"[<>=!~;\[\s]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """``name==version`` lines of a requirements file, by normalised name."""
    found = {}
    for line in text.splitlines():
        match = REQ_LINE.match(line)
        if match:
            found[_name(match.group(1))] = match.group(2)
    return found


def installed_collections() -> dict[str, str]:
    """Collections importable in this Python (the ``ansible`` package's), with their versions."""
    found: dict[str, str] = {}
    for entry in sys.path:
        base = Path(entry) / "ansible_collections"
        if not base.is_dir():
            continue
        for manifest in base.glob("*/*/MANIFEST.json"):
            info = json.loads(manifest.read_text())["collection_info"]
            found.setdefault(f"{info['namespace']}.{info['name']}", info["version"])
    return found


def used_collections(root: Path, known: Iterable[str]) -> dict[str, set[str]]:
    """Collections named by FQCN (``ns.coll.thing``) in the scanned files -> the files naming them.

    Only names of collections that exist count, so ``net.core.somaxconn`` is not a collection.
    """
    known = set(known)
    fqcn = re.compile(r"\b([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\.[a-z_][a-z0-9_]*")
    uses: dict[str, set[str]] = {}
    for base in SCANNED:
        for path in sorted((root / base).rglob("*")):
            if path.suffix not in (".yml", ".yaml", ".j2", ".py") or not path.is_file():
                continue
            for ns, coll in fqcn.findall(path.read_text(errors="replace")):
                name = f"{ns}.{coll}"
                if name in known and name not in BUILTIN:
                    uses.setdefault(name, set()).add(str(path.relative_to(root)))
    return uses


def problems(
    root: Path, ee: dict | None = None, installed: dict[str, str] | None = None, tested: bool | None = None
) -> list[str]:
    """Every way in which the EE recipe (default: root's execution-environment.yml) falls short of the repository.

    ``installed``: the collections importable here (default: found on sys.path). Their versions are
    the tested ones only when this ansible-core is the EE's (``tested``, default: compared); under the
    other supported toolchain (ansible-core 2.21) the versions are not compared.
    """
    installed = installed_collections() if installed is None else installed
    ee = yaml.safe_load((root / "execution-environment.yml").read_text()) if ee is None else ee
    deps = ee.get("dependencies", {})
    found: list[str] = []
    if tested is None:
        from ansible.release import __version__ as core

        tested = pins(deps.get("ansible_core", {}).get("package_pip", "")).get("ansible-core") == core

    ee_collections = {c["name"]: str(c.get("version", "")) for c in deps.get("galaxy", {}).get("collections", [])}
    galaxy = yaml.safe_load((root / COLLECTION / "galaxy.yml").read_text())
    for name, files in sorted(used_collections(root, installed).items()):
        if name not in ee_collections:
            found.append(f"{name} is used ({', '.join(sorted(files)[:3])}) but not installed in the EE")
    for name in sorted(galaxy.get("dependencies") or {}):
        if name not in ee_collections:
            found.append(f"{name} is a dependency in galaxy.yml but not installed in the EE")
    for name, version in sorted(ee_collections.items()) if tested else ():
        version_here = installed.get(name)
        if version_here is None:
            found.append(f"{name} is in the EE but not installed here, so it is not tested")
        elif version != version_here:
            found.append(
                f"{name} is pinned to {version or 'no version'} in the EE; the tested version is {version_here}"
            )

    requirements = pins((root / "requirements.txt").read_text())
    ee_python = {"ansible-core": deps.get("ansible_core", {}).get("package_pip", "")}
    ee_python["ansible-runner"] = deps.get("ansible_runner", {}).get("package_pip", "")
    for requirement in deps.get("python", []):
        ee_python[_name(requirement)] = requirement
    for name, requirement in sorted(ee_python.items()):
        pinned = pins(requirement).get(name)
        if pinned is None:
            found.append(f"{name} has no exact pin in the EE ({requirement or 'missing'})")
        elif name in requirements and pinned != requirements[name]:
            found.append(f"{name} is {pinned} in the EE but {requirements[name]} in requirements.txt")

    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    for requirement in project.get("dependencies", []):
        if _name(requirement) not in ee_python:
            found.append(f"{_name(requirement)} (a dependency of the mlfleet command) is not in the EE")

    files = [str(f.get("src", "")) for f in ee.get("additional_build_files", [])]
    steps = "\n".join(ee.get("additional_build_steps", {}).get("append_final", []))
    if not any(src.endswith(".whl") for src in files) or "pip install" not in steps:
        found.append("the EE does not install the mlfleet wheel (the drift tool and the mlfleet command)")
    if not any("mlfleet-fleet-" in src for src in files) or "ansible-galaxy collection install" not in steps:
        found.append("the EE does not install the mlfleet.fleet collection built from this checkout")
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    found = problems(root)
    for problem in found:
        print(f"execution-environment.yml: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
