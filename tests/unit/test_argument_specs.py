"""Every role's meta/argument_specs.yml and defaults/main.yml describe the same variables with the same defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import COLLECTION, ROOT

ROLES = sorted(p for p in (COLLECTION / "roles").iterdir() if p.is_dir()) + [ROOT / "lab" / "roles" / "lab"]


def spec_options(role: Path) -> dict[str, dict]:
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    options: dict[str, dict] = {}
    for spec in specs.values():
        options.update(spec.get("options") or {})
    return options


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_specs_and_defaults_agree(role: Path) -> None:
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    options = spec_options(role)
    assert sorted(options) == sorted(defaults), "the same variables in defaults/main.yml and the argument specs"
    for name, value in defaults.items():
        if options[name].get("required"):
            # A required option has no default; defaults/main.yml only names it (empty) for the reader.
            continue
        spec_default = options[name].get("default")
        if isinstance(value, str) and isinstance(spec_default, str):
            # Folded templates differ only in whitespace.
            assert " ".join(value.split()) == " ".join(spec_default.split()), name
        else:
            assert spec_default == value, name


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_public_variable_carries_the_role_prefix(role: Path) -> None:
    options = spec_options(role)
    assert [name for name in options if not name.startswith(role.name + "_")] == []
