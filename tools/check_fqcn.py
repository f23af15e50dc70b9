"""Fail when a module, filter or role of the mlfleet.fleet collection is called by its short name.

Scans every YAML and Jinja file of the repository (the collection, playbooks, the lab, Molecule,
inventories), and the playbooks that Python tests write as strings, and reports each place that
names one of the collection's modules, filters or roles without its ``mlfleet.fleet.`` prefix.
``make lint`` runs it; exit 1 lists the places.

    python tools/check_fqcn.py [ROOT]
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

FQCN = "mlfleet.fleet"
SKIP_DIRS = {".venv", ".venv-core2.21", ".lab", ".cache", "artifacts", ".git", "node_modules", "output"}
# The unit test of this check plants short names on purpose.
SKIP_FILES = {"tests/unit/test_check_fqcn.py"}


def collection_names(root: Path) -> tuple[set[str], set[str], set[str]]:
    """The collection's module, filter and role names."""
    base = root / "collections" / "ansible_collections" / "mlfleet" / "fleet"
    modules = {p.stem for p in (base / "plugins" / "modules").glob("*.py") if p.stem != "__init__"}
    filters = {p.stem for p in (base / "plugins" / "filter").glob("*.yml")}
    roles = {p.name for p in (base / "roles").iterdir() if p.is_dir()}
    return modules, filters, roles


def files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if (
            path.suffix in (".yml", ".yaml", ".j2", ".py")
            and not SKIP_DIRS & set(rel.parts)
            and str(rel) not in SKIP_FILES
        ):
            yield path


def walk(node: object) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def problems(root: Path) -> list[str]:
    modules, filters, roles = collection_names(root)
    filter_re = re.compile(r"(?:\|\s*|map\(\s*['\"]|select\(\s*['\"])(" + "|".join(sorted(filters)) + r")\b")
    # Playbooks written as strings in Python (Molecule verifiers, tests): `role: <name>`, `<module>:`.
    role_re = re.compile(r"\brole:\s*['\"]?(" + "|".join(sorted(roles)) + r")\b(?!\.)")
    module_re = re.compile(r"(?:^|\\n|['\"])\s*-?\s*(" + "|".join(sorted(modules)) + r"):")
    found: list[str] = []
    for path in files(root):
        rel = path.relative_to(root)
        text = path.read_text(errors="replace")
        for n, line in enumerate(text.splitlines(), start=1):
            for m in filter_re.finditer(line):
                found.append(f"{rel}:{n}: filter '{m.group(1)}' without its FQCN ({FQCN}.{m.group(1)})")
        if path.suffix == ".py":
            for n, line in enumerate(text.splitlines(), start=1):
                found += [
                    f"{rel}:{n}: role '{m.group(1)}' without its FQCN ({FQCN}.{m.group(1)})"
                    for m in role_re.finditer(line)
                ]
                found += [
                    f"{rel}:{n}: module '{m.group(1)}' without its FQCN ({FQCN}.{m.group(1)})"
                    for m in module_re.finditer(line)
                ]
            continue
        if path.suffix == ".j2":
            continue
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError:
            continue
        for node in (d for doc in docs for d in walk(doc)):
            for key in node:
                if key in modules:
                    found.append(f"{rel}: module '{key}' called without its FQCN ({FQCN}.{key})")
            for key in ("ansible.builtin.include_role", "ansible.builtin.import_role", "include_role", "import_role"):
                spec = node.get(key)
                if isinstance(spec, dict) and spec.get("name") in roles:
                    found.append(f"{rel}: role '{spec['name']}' included without its FQCN ({FQCN}.{spec['name']})")
            for entry in node.get("roles", []) if isinstance(node.get("roles"), list) else []:
                name = entry.get("role", entry.get("name")) if isinstance(entry, dict) else entry
                if name in roles:
                    found.append(f"{rel}: role '{name}' applied without its FQCN ({FQCN}.{name})")
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1]
    found = problems(root)
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} short name(s) of {FQCN} content: call modules, filters and roles by FQCN.")
        return 1
    print(f"check_fqcn: every module, filter and role of {FQCN} is called by its FQCN.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
