"""Run a throwaway playbook of roles' entry points on the controller against a shipped inventory.

Nothing connects to a host: the entry points used this way run on the controller only. The output is
Ansible's JSON callback, so tests read task results instead of parsing text.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def run_playbook(
    tmp_path: Path, inventory: str, plays: list[dict[str, Any]], *extra: str
) -> subprocess.CompletedProcess[str]:
    """``plays`` written to a file under ``tmp_path`` and run with ``-i inventory`` (the example
    inventory's vault stands in with its unencrypted example)."""
    path = tmp_path / "playbook.yml"
    path.write_text(yaml.safe_dump(plays, sort_keys=False))
    vault_example = ROOT / inventory / "group_vars" / "all" / "vault.yml.example"
    if vault_example.exists():
        extra = ("-e", f"@{vault_example}", *extra)
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
    )
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(ROOT / inventory), str(path), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
