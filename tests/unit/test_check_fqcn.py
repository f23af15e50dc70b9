"""The FQCN check of make lint finds a module, filter or role called by its short name."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import check_fqcn  # noqa: E402


def make_tree(tmp_path: Path, playbook: str) -> Path:
    base = tmp_path / "collections" / "ansible_collections" / "mlfleet" / "fleet"
    (base / "plugins" / "modules").mkdir(parents=True)
    (base / "plugins" / "modules" / "model_health.py").write_text("")
    (base / "plugins" / "filter").mkdir()
    (base / "plugins" / "filter" / "oci_reference.yml").write_text("")
    (base / "roles" / "model_server").mkdir(parents=True)
    (tmp_path / "site.yml").write_text(playbook)
    return tmp_path


def test_the_repository_is_clean() -> None:
    assert check_fqcn.problems(ROOT) == []


def test_short_names_are_reported(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        """
- hosts: all
  roles:
    - model_server
    - role: mlfleet.fleet.model_server
  tasks:
    - model_health:
        url: http://127.0.0.1:8080
    - ansible.builtin.include_role:
        name: model_server
    - ansible.builtin.debug:
        msg: "{{ image | oci_reference }} {{ images | map('oci_reference') }} {{ image | mlfleet.fleet.oci_reference }}"
""",
    )
    # A playbook written as a string by a Python test counts too.
    (root / "test_x.py").write_text('PLAYBOOK = "- hosts: all\\n  roles:\\n    - role: model_server\\n"\n')
    found = check_fqcn.problems(root)
    assert len(found) == 6, found
    assert any(f.startswith("test_x.py:1: role 'model_server'") for f in found)
    assert any("module 'model_health'" in f for f in found)
    assert sum("filter 'oci_reference'" in f for f in found) == 2
    assert sum("role 'model_server'" in f for f in found) == 3
    assert check_fqcn.main(["check_fqcn", str(root)]) == 1


def test_fqcn_everywhere_passes(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        """
- hosts: all
  roles:
    - role: mlfleet.fleet.model_server
  tasks:
    - mlfleet.fleet.model_health:
        url: http://127.0.0.1:8080
""",
    )
    assert check_fqcn.main(["check_fqcn", str(root)]) == 0
