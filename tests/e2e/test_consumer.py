"""The collection as another team uses it: a scratch project outside this repository, with only a
requirements.yml naming the built tarball, an inventory and a short playbook calling roles by FQCN,
and no ansible.cfg, installs the collection, converges a fresh lab host and rolls a model out on it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from labkit import BIN, LAB_STATE, ROOT, Lab, extra_host, recap

COLLECTION = ROOT / "collections" / "ansible_collections" / "mlfleet" / "fleet"
HOST, ADDRESS = "consumer-1", "172.28.10.40"
REGISTRY = "172.28.10.30:5000"
# Lab hosts get new host keys with every lab; a real site pins them.
SSH_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"

PLAYBOOK = """
- name: Configure the host
  hosts: inference
  become: true
  roles:
    - role: mlfleet.fleet.ca_trust
      ca_trust_certificates: ["{{ site_ca }}"]
    - role: mlfleet.fleet.container_runtime
      container_runtime_registry_ca_certs: [{registry: "{{ site_registry }}", ca_cert: "{{ site_ca }}"}]

- name: Run the load balancer
  hosts: loadbalancers
  become: true
  roles:
    - role: mlfleet.fleet.inference_lb

- name: Choose the hosts of this rollout
  hosts: inference
  become: true
  gather_facts: false
  tasks:
    - name: Choose the targets
      ansible.builtin.include_role: {name: mlfleet.fleet.rollout, tasks_from: targets}

- name: Check every target before any host is drained
  hosts: rollout_targets
  become: true
  gather_facts: false
  any_errors_fatal: true
  tasks:
    - name: Check and plan
      ansible.builtin.include_role: {name: mlfleet.fleet.rollout, tasks_from: preflight}

- name: Check that the load balancer agrees
  hosts: loadbalancers
  become: true
  gather_facts: false
  any_errors_fatal: true
  tasks:
    - name: Compare the live configuration
      ansible.builtin.include_role: {name: mlfleet.fleet.rollout, tasks_from: lb_check}

- name: Roll out
  hosts: rollout_targets
  become: true
  gather_facts: false
  roles:
    - role: mlfleet.fleet.rollout
"""


def inventory() -> dict:
    return {
        "all": {
            "vars": {
                "ansible_user": "deploy",
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_ssh_private_key_file": str(LAB_STATE / "ssh" / "id_ed25519"),
                "ansible_ssh_common_args": SSH_ARGS,
                "site_ca": str(LAB_STATE / "pki" / "ca.crt"),
                "site_registry": REGISTRY,
            },
            "children": {
                "inference": {
                    "hosts": {HOST: {"ansible_host": ADDRESS}},
                    "vars": {
                        "model_server_name": "iris",
                        "model_server_version": "v1",
                        "model_server_image": f"{REGISTRY}/iris",
                        "model_server_memory": "1g",
                        "model_server_api_allowed_from": ["loadbalancers"],
                        "model_server_metrics_allowed_from": ["loadbalancers"],
                        "model_server_min_free_mb": 1500,
                        "model_server_health_infer_request": {
                            "inputs": [
                                {"name": "predict", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
                            ]
                        },
                        "model_server_health_expected_output": [0],
                        "model_server_health_deadline": 90,
                    },
                },
                "loadbalancers": {
                    "hosts": {HOST: {}},
                    "vars": {"inference_lb_models": [{"name": "iris", "port": 8000}]},
                },
            },
        }
    }


def consumer_env() -> dict[str, str]:
    """The user's shell: the toolchain on PATH, and no setting of this repository (no ANSIBLE_CONFIG, no paths)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env.update(ANSIBLE_FORCE_COLOR="false", ANSIBLE_NOCOLOR="true")
    return env


def consumer(project: Path, *cmd: str, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(cmd), cwd=project, env=consumer_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def project(lab: Lab) -> Iterator[Path]:
    """The scratch project, with the collection built from this tree and installed into it."""
    root = Path(tempfile.mkdtemp(prefix="mlfleet-consumer-"))
    try:
        build = consumer(
            root, str(BIN / "ansible-galaxy"), "collection", "build", str(COLLECTION), "--output-path", "dist"
        )
        assert build.returncode == 0, build.stdout + build.stderr
        tarball = next((root / "dist").glob("mlfleet-fleet-*.tar.gz"))
        (root / "requirements.yml").write_text(
            yaml.safe_dump({"collections": [{"name": str(tarball), "type": "file"}]})
        )
        (root / "inventory.yml").write_text(yaml.safe_dump(inventory(), sort_keys=False))
        (root / "site.yml").write_text(PLAYBOOK.lstrip())
        # The dependencies (community.docker, community.general, ...) come with the ansible package.
        install = consumer(
            root,
            str(BIN / "ansible-galaxy"),
            "collection",
            "install",
            "-r",
            "requirements.yml",
            "-p",
            "collections",
            "--offline",
        )
        assert install.returncode == 0, install.stdout + install.stderr
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_tarball_holds_the_product_only(project: Path) -> None:
    installed = project / "collections" / "ansible_collections" / "mlfleet" / "fleet"
    top = sorted(p.name for p in installed.iterdir())
    assert top == ["CHANGELOG.md", "FILES.json", "LICENSE", "MANIFEST.json", "README.md", "meta", "plugins", "roles"]
    names = {str(p.relative_to(installed)) for p in installed.rglob("*")}
    assert not [n for n in names if "lab" in n.split("/") or "tests" in n.split("/") or "__pycache__" in n]
    assert not list(project.glob("ansible.cfg"))


def test_a_scratch_project_converges_a_host_and_rolls_a_model_out(lab: Lab, project: Path) -> None:
    with extra_host(lab, HOST, ADDRESS):
        res = consumer(project, str(BIN / "ansible-playbook"), "-i", "inventory.yml", "site.yml")
        assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-2000:]
        assert recap(res.stdout)[HOST]["failed"] == 0
        assert infer()["model_version"] == "v1"

        res = consumer(
            project, str(BIN / "ansible-playbook"), "-i", "inventory.yml", "site.yml", "-e", "rollout_version=v2"
        )
        assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-2000:]
        assert f"{HOST}: v1 -> v2" in res.stdout
        answer = infer()
        assert (answer["model_version"], answer["outputs"][0]["data"]) == ("v2", [0])
        # The ledger lands beside the consumer's playbook (there is no ansible.cfg to put it elsewhere).
        records = [
            json.loads(line)
            for line in (project / "artifacts" / "ledger" / "deployments.jsonl").read_text().splitlines()
        ]
        assert [(r["host"], r["result"], r["version"]) for r in records] == [
            (HOST, "deployed", "v1"),
            (HOST, "deployed", "v2"),
        ]


def infer() -> dict:
    body = json.dumps(
        {"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
    )
    req = urllib.request.Request(
        f"http://{ADDRESS}:8000/v2/models/iris/infer", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())
