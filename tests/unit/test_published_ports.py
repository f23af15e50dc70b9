"""Every published container port of every shipped inventory has a firewall rule that says who may reach it.

For each inventory (lab and example) a playbook runs the plays of playbooks/hosts.yml that come
before the host roles (they describe what the NVIDIA stack publishes), then asks the hardening role,
with the very parameters playbooks/hosts.yml gives it, which forward-chain rules it would write.
Nothing connects to a host: all of it runs on the controller. The published ports are the ``-p``
specifications the roles run their containers with (the model service's ``publish``, computed by
the same filter the model_server role uses, and nvidia_gpu_service.publish).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from playbook_runner import run_playbook

ROOT = Path(__file__).resolve().parents[2]
INVENTORIES = ["inventories/lab", "inventories/example"]


def site_wiring() -> tuple[list[dict], dict]:
    """From playbooks/hosts.yml (the real wiring, not a copy): the plays before the hardening role's,
    and the parameters it passes to that role."""
    plays = yaml.safe_load((ROOT / "playbooks" / "hosts.yml").read_text())
    for n, play in enumerate(plays):
        for role in play.get("roles", []):
            if isinstance(role, dict) and role.get("role") == "mlfleet.fleet.hardening":
                return plays[:n], {k: v for k, v in role.items() if k != "role"}
    raise AssertionError("playbooks/hosts.yml applies no mlfleet.fleet.hardening role")


def firewall_view(tmp_path: Path, inventory: str, *extra: str) -> dict[str, dict]:
    """Per host: the published host ports and the forward-chain rules the hardening role would write."""
    before, params = site_wiring()
    playbook = [
        *before,
        {
            "name": "Ask what each host's firewall would let through",
            "hosts": "all",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Collect the hardening role's firewall rules",
                    "ansible.builtin.include_role": {"name": "mlfleet.fleet.hardening", "tasks_from": "rules"},
                    "vars": params,
                },
                {
                    "name": "Show the published ports and the rules",
                    "ansible.builtin.debug": {
                        "msg": {
                            "published": "{{ ((hostvars[inventory_hostname] | mlfleet.fleet.model_service(groups,"
                            " hostvars)).publish | default([])) + (nvidia_gpu_service.publish | default([])) }}",
                            "forward": "{{ hardening_firewall_rules.forward }}",
                        }
                    },
                },
            ],
        },
    ]
    res = run_playbook(tmp_path, inventory, playbook, *extra)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    tasks = json.loads(res.stdout)["plays"][-1]["tasks"]
    return {host: result["msg"] for host, result in tasks[-1]["hosts"].items()}


def unruled_ports(view: dict[str, dict]) -> dict[str, list[int]]:
    """Per host, the published host ports that no forward rule with sources decides."""
    missing: dict[str, list[int]] = {}
    for host, data in view.items():
        ruled = {int(r["port"]) for r in data["forward"] if r.get("sources")}
        published = sorted({int(spec.split(":")[-2]) for spec in data["published"]})
        if unruled := [p for p in published if p not in ruled]:
            missing[host] = unruled
    return missing


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_every_published_port_has_a_rule(tmp_path: Path, inventory: str) -> None:
    view = firewall_view(tmp_path, inventory)
    assert any(data["published"] for data in view.values()), "no host publishes a port: the test saw nothing"
    assert unruled_ports(view) == {}


def test_the_model_ports_are_derived_from_the_model_service(tmp_path: Path) -> None:
    view = firewall_view(tmp_path, "inventories/example")
    # vLLM serves on 8000 on the GPU hosts: its rule comes from the same definition as its port.
    gpu = view["gpu-a01.ml.example.internal"]
    assert "0.0.0.0:8000:8000" in gpu["published"]
    api = next(r for r in gpu["forward"] if r["port"] == 8000)
    assert sorted(api["sources"]) == ["10.20.0.10", "10.20.3.30"]
    # The DCGM exporter (9400) answers only the monitoring host.
    dcgm = next(r for r in gpu["forward"] if r["port"] == 9400)
    assert dcgm["sources"] == ["10.20.3.30"]
    # One vLLM replica per GPU on the 8-GPU host: eight API ports, each with its rule.
    h100 = view["gpu-h100-01.ml.example.internal"]
    assert sorted(int(p.split(":")[-2]) for p in h100["published"] if p.startswith("0.0.0.0:80")) == list(
        range(8000, 8008)
    )
    assert sorted(r["port"] for r in h100["forward"] if 8000 <= r["port"] < 8100) == list(range(8000, 8008))


def test_a_published_port_without_a_rule_is_found(tmp_path: Path) -> None:
    # Cut the wiring of the exported rules: the published ports are then open to anyone.
    view = firewall_view(
        tmp_path, "inventories/lab", "-e", json.dumps({"hardening_firewall_docker_ports_dependent": []})
    )
    # The lab's GPU hosts also declare the DCGM exporter (it runs only where a GPU is found).
    # The CPU hosts run two replicas of iris: API 8080-8081, metrics 8082-8083.
    assert unruled_ports(view) == {
        "cpu-1": [8080, 8081, 8082, 8083],
        "cpu-2": [8080, 8081, 8082, 8083],
        "gpu-1": [8080, 8082, 9400],
        "gpu-2": [8080, 8082, 9400],
    }
    view = firewall_view(
        tmp_path, "inventories/example", "-e", json.dumps({"hardening_firewall_docker_ports_dependent": []})
    )
    assert unruled_ports(view)["gpu-a01.ml.example.internal"] == [8000, 9400]
