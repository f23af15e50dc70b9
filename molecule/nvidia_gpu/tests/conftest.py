"""Helpers for the nvidia_gpu scenario: run the role again from the controller and read its output."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIO = Path(__file__).resolve().parent.parent
FIXTURES = SCENARIO.parent.parent / "tests" / "unit" / "fixtures" / "nvidia_smi"


def _ansible_playbook() -> str:
    # The venv that runs Molecule (and this pytest) holds ansible-playbook.
    beside = Path(sys.executable).parent / "ansible-playbook"
    return str(beside) if beside.exists() else (shutil.which("ansible-playbook") or "ansible-playbook")


@pytest.fixture(scope="session")
def run_playbook():
    """Run a playbook of this scenario against Molecule's inventory; return (rc, output)."""
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not inventory:
        pytest.fail("MOLECULE_INVENTORY_FILE is not set: run these tests through `molecule verify`")

    def run(playbook: str, *args: str) -> tuple[int, str]:
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
        proc = subprocess.run(
            [_ansible_playbook(), "-i", inventory, str(SCENARIO / playbook), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        return proc.returncode, proc.stdout + proc.stderr

    return run
