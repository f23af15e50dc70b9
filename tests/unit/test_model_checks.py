"""The checks of meaning of a model's settings (filter mlfleet.fleet.model_checks), and that every
model of the shipped inventories passes them through the role's own entry point."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.mlfleet.fleet.plugins.filter.model_checks import WAIVERS, model_checks
from playbook_runner import run_playbook

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = yaml.safe_load(
    (ROOT / "collections/ansible_collections/mlfleet/fleet/roles/model_server/defaults/main.yml").read_text()
)
GOOD: dict[str, Any] = {
    "name": "iris",
    "version": "v2",
    "tag": "v2",
    "image": "172.28.10.30:5000/iris",
    "artifacts": [{"url": "https://models.example/iris.onnx", "sha256": "a" * 64}],
    "cpus": DEFAULTS["model_server_cpus"],
    "memory": DEFAULTS["model_server_memory"],
    "pids_limit": DEFAULTS["model_server_pids_limit"],
    "user": DEFAULTS["model_server_user"],
    "cap_drop": DEFAULTS["model_server_cap_drop"],
    "security_opts": DEFAULTS["model_server_security_opts"],
    "read_only": DEFAULTS["model_server_read_only"],
    "security_waivers": DEFAULTS["model_server_security_waivers"],
}


def problems(**change: Any) -> list[str]:
    return model_checks({**GOOD, **change})


def test_the_role_defaults_with_a_good_model_pass() -> None:
    assert problems() == []


@pytest.mark.parametrize("version", ["v2", "2024-09", "7", "24.08-py3", "v0.6.3", "_x", "1.0.0-rc.1", "A" * 128])
def test_image_tags_are_versions(version: str) -> None:
    assert problems(version=version, tag=version) == []


@pytest.mark.parametrize(
    "version", ["v2 bad/../:tag", "..", ".v2", "-v2", "v2/x", "v2:x", "v2@sha256", "A" * 129, "vé"]
)
def test_a_version_that_is_no_tag_is_refused_by_name(version: str) -> None:
    (message,) = problems(version=version)
    assert message.startswith(f"model_server_version {version!r} is not an image tag")


def test_a_tag_is_checked_apart_from_the_version() -> None:
    (message,) = problems(tag="24.08 py3")
    assert message.startswith("model_server_tag '24.08 py3' is not an image tag")


@pytest.mark.parametrize("name", ["iris", "llama-3-8b-instruct", "bert_small", "m.v1"])
def test_model_names(name: str) -> None:
    assert problems(name=name) == []


@pytest.mark.parametrize("name", ["-iris", "iris/x", "ir is", "x" * 64])
def test_bad_model_names(name: str) -> None:
    (message,) = problems(name=name)
    assert "is not a model name" in message


@pytest.mark.parametrize(
    "image",
    [
        "iris",
        "reg.example.com/ml/iris",
        "localhost:5000/iris",
        "172.28.10.30:5000/team/vllm-openai",
        "nvcr.io/nvidia/tritonserver",
        "[fd00::1]:5000/iris",
        "reg/a__b/c-d.e",
    ],
)
def test_image_repositories(image: str) -> None:
    assert problems(image=image) == []


@pytest.mark.parametrize(
    ("image", "hint"),
    [
        ("reg:5000/iris:v2", "without the tag or digest"),
        ("reg:5000/iris@sha256:" + "a" * 64, "without the tag or digest"),
        ("reg:5000/Iris", ""),
        ("reg:5000/ir is", ""),
        ("reg:5000//iris", ""),
        ("reg:5000/iris/", ""),
    ],
)
def test_bad_image_repositories(image: str, hint: str) -> None:
    (message,) = problems(image=image)
    assert message.startswith(f"model_server_image {image!r} is not an image repository")
    assert hint in message


@pytest.mark.parametrize(
    ("artifact", "part"),
    [
        ({"url": "https://m/x", "sha256": "a" * 63}, ".sha256 "),
        ({"url": "https://m/x", "sha256": "g" * 64}, ".sha256 "),
        ({"url": "https://m/x", "sha256": "sha256:" + "a" * 64}, ".sha256 "),
        ({"url": "https://m/x"}, ".sha256 "),
        ({"url": "ftp://m/x", "sha256": "a" * 64}, ".url "),
        ({"url": "https://m/x", "sha256": "a" * 64, "filename": "../x"}, ".filename "),
        ({"url": "https://m/x", "sha256": "a" * 64, "filename": ".."}, ".filename "),
        ("https://m/x", "must be a dict"),
    ],
)
def test_bad_artifacts_are_named_by_index(artifact: Any, part: str) -> None:
    (message,) = problems(artifacts=[GOOD["artifacts"][0], artifact])
    assert message.startswith("model_server_artifacts[1]")
    assert part in message


def test_an_uppercase_sha256_is_a_sha256() -> None:
    assert problems(artifacts=[{"url": "http://m/x", "sha256": "AB" * 32, "filename": "m.onnx"}]) == []


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"cpus": 0}, "model_server_cpus"),
        ({"cpus": -1.5}, "model_server_cpus"),
        ({"cpus": "many"}, "model_server_cpus"),
        ({"cpus": True}, "model_server_cpus"),
        ({"pids_limit": 0}, "model_server_pids_limit"),
        ({"pids_limit": -1}, "model_server_pids_limit"),
        ({"pids_limit": "1.5"}, "model_server_pids_limit"),
        ({"memory": "0"}, "model_server_memory"),
        ({"memory": "-1g"}, "model_server_memory"),
        ({"memory": "4 gigs"}, "model_server_memory"),
        ({"memory": "4t"}, "model_server_memory"),
    ],
)
def test_limits_that_cannot_limit_are_refused(change: dict[str, Any], variable: str) -> None:
    (message,) = problems(**change)
    assert message.startswith(variable)


@pytest.mark.parametrize("change", [{"cpus": "0.5"}, {"pids_limit": "64"}, {"memory": "512m"}, {"memory": 1073741824}])
def test_limits_as_the_inventory_writes_them(change: dict[str, Any]) -> None:
    assert problems(**change) == []


@pytest.mark.parametrize(
    ("change", "waiver"),
    [
        ({"user": "0:0"}, "root_user"),
        ({"user": "root"}, "root_user"),
        ({"user": "0"}, "root_user"),
        ({"user": ""}, "root_user"),
        ({"cap_drop": []}, "capabilities"),
        ({"cap_drop": ["NET_RAW"]}, "capabilities"),
        ({"security_opts": []}, "privilege_escalation"),
        ({"security_opts": ["no-new-privileges:false"]}, "privilege_escalation"),
        ({"read_only": False}, "writable_root"),
    ],
)
def test_weakened_hardening_is_refused_unless_waived_by_name(change: dict[str, Any], waiver: str) -> None:
    (message,) = problems(**change)
    assert f"model_server_security_waivers: [{waiver}]" in message
    assert problems(**change, security_waivers=[waiver]) == []
    other = [w for w in WAIVERS if w != waiver]
    assert len(problems(**change, security_waivers=other)) == 1


@pytest.mark.parametrize("change", [{"user": "10001"}, {"cap_drop": ["all"]}, {"security_opts": ["no-new-privileges"]}])
def test_equivalent_spellings_of_the_hardening(change: dict[str, Any]) -> None:
    assert problems(**change) == []


def test_an_unknown_waiver_is_named() -> None:
    (message,) = problems(security_waivers=["everything"])
    assert "everything" in message and "root_user" in message


def test_every_problem_is_reported_at_once() -> None:
    assert len(problems(version="a b", cpus=0, user="root", read_only=False)) == 4


def test_settings_that_are_no_dict_are_an_error() -> None:
    with pytest.raises(AnsibleFilterError, match="model_checks"):
        model_checks(["iris"])  # type: ignore[arg-type]


def check_inventory(tmp_path: Path, inventory: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """The role's own check (model_server's `service` entry point, run on the controller) on every host."""
    playbook = [
        {
            "name": "Describe every model service",
            "hosts": "all",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Check the model settings",
                    "ansible.builtin.include_role": {"name": "mlfleet.fleet.model_server", "tasks_from": "service"},
                    "when": "model_server_name | default('') | length > 0",
                },
                {
                    "name": "Say which hosts were checked",
                    "ansible.builtin.debug": {"msg": "{{ model_server_name | default('') }}"},
                },
            ],
        }
    ]
    return run_playbook(tmp_path, inventory, playbook, *extra)


@pytest.mark.parametrize("inventory", ["inventories/lab", "inventories/example"])
def test_every_model_of_the_shipped_inventories_passes(tmp_path: Path, inventory: str) -> None:
    res = check_inventory(tmp_path, inventory)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    tasks = json.loads(res.stdout)["plays"][0]["tasks"]
    served = {host: r["msg"] for host, r in tasks[-1]["hosts"].items() if r["msg"]}
    assert len(served) >= 2, served


def test_the_role_refuses_a_bad_setting_with_every_problem_named(tmp_path: Path) -> None:
    res = check_inventory(
        tmp_path,
        "inventories/lab",
        "-e",
        json.dumps({"model_server_version": "v2 bad/../:tag", "model_server_user": "0:0"}),
    )
    assert res.returncode != 0
    assert "The settings of model iris on cpu-1 are refused" in res.stdout
    assert "model_server_version 'v2 bad/../:tag' is not an image tag" in res.stdout
    assert "model_server_user runs the container as root" in res.stdout


def choose_targets(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The rollout role's `targets` entry point over the example inventory (three models; no connection)."""
    playbook = [
        {
            "name": "Choose the hosts of a rollout",
            "hosts": "inference",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Choose the targets",
                    "ansible.builtin.include_role": {"name": "mlfleet.fleet.rollout", "tasks_from": "targets"},
                },
                {
                    "name": "Say which hosts are targets",
                    "ansible.builtin.debug": {"msg": "{{ groups['rollout_targets'] | default([]) | sort }}"},
                    "run_once": True,
                },
            ],
        }
    ]
    return run_playbook(tmp_path, "inventories/example", playbook, *extra)


def test_a_version_without_a_model_is_refused_where_hosts_serve_several(tmp_path: Path) -> None:
    res = choose_targets(tmp_path, "-e", "rollout_version=v3")
    assert res.returncode != 0
    assert "rollout_version=v3 names no model" in res.stdout
    assert "serve 3 (bert-small, iris, llama-3-8b-instruct)" in res.stdout
    assert "-e rollout_model=<name>" in res.stdout


def test_a_version_for_one_model_targets_its_hosts_only(tmp_path: Path) -> None:
    res = choose_targets(tmp_path, "-e", "rollout_version=v3", "-e", "rollout_model=iris")
    assert res.returncode == 0, res.stdout[-3000:]
    (said,) = json.loads(res.stdout)["plays"][0]["tasks"][-1]["hosts"].values()
    assert said["msg"] == [f"cpu-a0{n}.ml.example.internal" for n in (1, 2)] + ["cpu-big-01.ml.example.internal"]


def test_a_mistyped_model_is_refused(tmp_path: Path) -> None:
    res = choose_targets(tmp_path, "-e", "rollout_version=v3", "-e", "rollout_model=irs")
    assert res.returncode != 0
    assert "No host of group inference serves a model named 'irs'" in res.stdout
