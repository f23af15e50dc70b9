"""lab-down removes every docker object and the per-lab secrets; runs after all other e2e tests."""

from __future__ import annotations

import pytest
from labkit import LAB_NAME, LAB_STATE, Lab, playbook, run


@pytest.mark.lab_teardown
def test_lab_down_leaves_nothing_behind(lab: Lab) -> None:
    playbook("lab/down.yml")
    label = f"label=mlfleet.lab={LAB_NAME}"
    assert run(["docker", "ps", "-aq", "--filter", label], check=True).stdout.strip() == ""
    assert run(["docker", "network", "ls", "-q", "--filter", f"name=^{LAB_NAME}$"], check=True).stdout.strip() == ""
    assert run(["docker", "volume", "ls", "-q", "--filter", label], check=True).stdout.strip() == ""
    assert not LAB_STATE.exists()
    # And a second lab-down is harmless.
    playbook("lab/down.yml")
