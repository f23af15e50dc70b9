"""Generate the variables section of every role README from the role's meta/argument_specs.yml.

The argument specs are the one place where a role's options are written (type, default,
description); each README carries a generated copy between two markers. ``make lint`` runs this with
``--check``, which fails when a README is out of date; ``make docs`` rewrites them.

    python tools/role_docs.py [--check] [ROLES_DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ROLES = ROOT / "collections" / "ansible_collections" / "mlfleet" / "fleet" / "roles"
BEGIN = "<!-- BEGIN VARIABLES: generated from meta/argument_specs.yml by tools/role_docs.py; do not edit -->"
END = "<!-- END VARIABLES -->"


def cell(value: object) -> str:
    text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    text = text.removesuffix("...").strip().replace("\n", " ")
    return text.replace("|", "\\|")


def describe(name: str, spec: dict, prefix: str = "") -> list[str]:
    kind = spec.get("type", "str")
    if spec.get("elements"):
        kind += f" of {spec['elements']}"
    default = "*required*" if spec.get("required") else (f"`{cell(spec['default'])}`" if "default" in spec else "")
    desc = spec.get("description", "")
    desc = " ".join(desc) if isinstance(desc, list) else desc
    if spec.get("choices"):
        desc += " One of: " + ", ".join(f"`{c}`" for c in spec["choices"]) + "."
    rows = [f"| `{prefix}{name}` | {kind} | {default} | {cell(desc)} |"]
    for sub, subspec in (spec.get("options") or {}).items():
        rows += describe(sub, subspec, prefix=f"{prefix}{name}[].")
    return rows


def section(specs: dict) -> str:
    lines = [BEGIN, "", "Entry points (`tasks_from`):", "", "| entry point | what it does |", "|---|---|"]
    for entry, spec in specs.items():
        lines.append(f"| `{entry}` | {cell(spec.get('short_description', ''))} |")
    # Entry points share one option list (a YAML alias) or list their own: each option once.
    options: dict[str, dict] = {}
    for spec in specs.values():
        for name, opt in (spec.get("options") or {}).items():
            options.setdefault(name, opt)
    lines += ["", "| Variable | Type | Default | Description |", "|---|---|---|---|"]
    for name, opt in options.items():
        lines += describe(name, opt)
    lines += ["", END]
    return "\n".join(lines)


def render(readme: str, generated: str) -> str:
    if BEGIN in readme and END in readme:
        head, rest = readme.split(BEGIN, 1)
        return head + generated + rest.split(END, 1)[1]
    lines = readme.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("| Variable ")), None)
    if start is not None:
        end = start
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        return "\n".join(lines[:start] + generated.splitlines() + lines[end:]) + "\n"
    return readme.rstrip("\n") + "\n\n## Variables\n\n" + generated + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report out-of-date READMEs (exit 1)")
    parser.add_argument("roles", nargs="?", type=Path, default=ROLES)
    args = parser.parse_args(argv)
    stale = []
    for role in sorted(p for p in args.roles.iterdir() if (p / "meta" / "argument_specs.yml").exists()):
        specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
        readme_path = role / "README.md"
        readme = readme_path.read_text() if readme_path.exists() else f"# {role.name}\n"
        updated = render(readme, section(specs))
        if updated != readme:
            stale.append(role.name)
            if not args.check:
                readme_path.write_text(updated)
    if args.check and stale:
        names = ", ".join(stale)
        print(f"out of date: {names} (README variables differ from meta/argument_specs.yml); run `make docs`")
        return 1
    print(("updated: " + ", ".join(stale)) if stale and not args.check else "role READMEs match their argument specs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
