"""One shared lab for every end-to-end test.

The first test that asks for ``lab`` brings it up with ``lab/up.yml`` (a no-op when it is
already up); tests marked ``lab_teardown`` run after all others and remove it.
"""

from __future__ import annotations

import pytest
from labkit import Lab, load_inventory, playbook


@pytest.fixture(scope="session")
def lab_up_output() -> str:
    res = playbook("lab/up.yml")
    return res.stdout


@pytest.fixture(scope="session")
def lab(lab_up_output: str) -> Lab:
    return load_inventory()


@pytest.fixture(scope="session")
def converged(lab: Lab) -> str:
    """site.yml converged once for every test that needs a configured fleet (lab pins v2; start at v1)."""
    return playbook("playbooks/site.yml", "-e", "rollout_version=v1", timeout=3600).stdout


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Late tests (they move the fleet to the inventory's pins) after the others, teardown tests last."""
    items.sort(
        key=lambda item: (
            item.get_closest_marker("lab_teardown") is not None,
            item.get_closest_marker("lab_late") is not None,
        )
    )
