"""One shared lab for every end-to-end test.

The first test that asks for ``lab`` takes the lab's lease (while another end-to-end run on this
docker engine holds it, this one waits), brings down a lab left by an earlier run when asked
(``--fresh-lab``, as ``make e2e`` does: a killed run leaves its hosts converged, and every test
before the converge would run on them), then brings it up with ``lab/up.yml`` (a no-op when it is
already up). Tests marked ``lab_teardown`` run after all others and remove it. The fleet is
converged once (``converged``, at v1) and the tests that need it share that one converge.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from labkit import Lab, lab_lease, load_inventory, mitogen_env, playbook


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fresh-lab",
        action="store_true",
        help="bring down a lab left by an earlier run before the first test that needs one (make e2e, CI)",
    )


@pytest.fixture(scope="session")
def lab_held() -> Iterator[None]:
    """This run's hold on the lab, from the first test that needs it to the end of the session."""
    with lab_lease():
        yield


@pytest.fixture(scope="session")
def lab_up_output(lab_held: None, request: pytest.FixtureRequest) -> str:
    if request.config.getoption("--fresh-lab"):
        playbook("lab/down.yml")
    res = playbook("lab/up.yml")
    return res.stdout


@pytest.fixture(scope="session")
def lab(lab_up_output: str) -> Lab:
    return load_inventory()


@pytest.fixture(scope="session")
def converged(lab: Lab) -> str:
    """site.yml converged once for every test that needs a configured fleet (lab pins v2; start at v1),
    under the Mitogen strategy (labkit.mitogen_env)."""
    return playbook("playbooks/site.yml", "-e", "rollout_version=v1", timeout=3600, env=mitogen_env()).stdout


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the shared lab's tests: those that need no converged fleet first; then the tests marked
    ``lab_converged_first`` (drift), on the fleet exactly as ``converged`` left it; then every other
    test on the converged fleet (they roll versions out and back); teardown tests last."""

    def stage(item: pytest.Item) -> int:
        if item.get_closest_marker("lab_teardown") is not None:
            return 3
        if "converged" not in item.fixturenames:
            return 0
        return 1 if item.get_closest_marker("lab_converged_first") is not None else 2

    items.sort(key=stage)
