"""Shared paths of the unit tests.

The collection's Python is imported by its real names (``ansible_collections.mlfleet.fleet...``), as
Ansible imports it: pytest puts ``collections/`` on ``sys.path`` (pyproject.toml), and
``ansible_collections`` is a namespace package shared with the collections the ``ansible`` package
installs.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = ROOT / "collections" / "ansible_collections" / "mlfleet" / "fleet"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
