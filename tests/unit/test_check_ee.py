"""tools/check_ee.py: the execution environment carries what the repository ships and uses."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import check_ee  # noqa: E402


@pytest.fixture(scope="module")
def recipe() -> dict:
    return yaml.safe_load((ROOT / "execution-environment.yml").read_text())


@pytest.fixture(scope="module")
def installed() -> dict[str, str]:
    return check_ee.installed_collections()


def collections_of(ee: dict) -> list[dict]:
    return ee["dependencies"]["galaxy"]["collections"]


def test_the_repository_recipe_has_no_problem(recipe: dict, installed: dict[str, str]) -> None:
    assert check_ee.problems(ROOT, recipe, installed) == []


def test_a_collection_a_role_uses_must_be_in_the_ee(recipe: dict, installed: dict[str, str]) -> None:
    ee = copy.deepcopy(recipe)
    ee["dependencies"]["galaxy"]["collections"] = [c for c in collections_of(ee) if c["name"] != "containers.podman"]
    found = check_ee.problems(ROOT, ee, installed, tested=True)
    assert any(
        p.startswith("containers.podman is used (") and "roles/container_runtime/tasks/registries.yml" in p
        for p in found
    ), found
    assert "containers.podman is a dependency in galaxy.yml but not installed in the EE" in found


def test_names_that_only_look_like_a_collection_are_not_counted(installed: dict[str, str]) -> None:
    # The hardening and baseline roles set sysctls such as net.core.somaxconn; "net.core" is no collection.
    uses = check_ee.used_collections(ROOT, installed)
    assert "net.core" not in uses
    assert "ansible.builtin" not in uses
    assert {"community.docker", "ansible.posix", "community.general", "containers.podman"} <= set(uses)


def test_a_collection_version_other_than_the_tested_one_is_refused(recipe: dict, installed: dict[str, str]) -> None:
    ee = copy.deepcopy(recipe)
    for c in collections_of(ee):
        if c["name"] == "community.docker":
            c["version"] = "3.0.0"
    found = check_ee.problems(ROOT, ee, installed, tested=True)
    assert (
        f"community.docker is pinned to 3.0.0 in the EE; the tested version is {installed['community.docker']}" in found
    )


def test_python_pins_follow_requirements_txt(recipe: dict, installed: dict[str, str]) -> None:
    ee = copy.deepcopy(recipe)
    ee["dependencies"]["ansible_core"]["package_pip"] = "ansible-core==2.18.0"
    ee["dependencies"]["python"] = [r for r in ee["dependencies"]["python"] if not r.startswith("pyyaml")] + [
        "requests"
    ]
    found = check_ee.problems(ROOT, ee, installed, tested=True)
    pinned = check_ee.pins((ROOT / "requirements.txt").read_text())["ansible-core"]
    assert f"ansible-core is 2.18.0 in the EE but {pinned} in requirements.txt" in found
    assert "requests has no exact pin in the EE (requests)" in found
    assert "pyyaml (a dependency of the mlfleet command) is not in the EE" in found


def test_the_ee_must_install_the_collection_and_the_mlfleet_wheel(recipe: dict, installed: dict[str, str]) -> None:
    ee = copy.deepcopy(recipe)
    ee["additional_build_files"] = []
    found = check_ee.problems(ROOT, ee, installed, tested=True)
    assert "the EE does not install the mlfleet wheel (the drift tool and the mlfleet command)" in found
    assert "the EE does not install the mlfleet.fleet collection built from this checkout" in found
