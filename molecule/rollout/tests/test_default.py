"""The rollout role, as a user observes it: the model answers through HAProxy from a hardened container
pinned by digest, a new version rolls out with the ledger recording it, and a bad version is stopped
by the health gate and rolled back, the host back in the load balancer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import testinfra

# The hosts are reached by container name (docker://): the inventory's ansible_host is the address
# the services are derived from, which testinfra's ansible backend would take for the container.
testinfra_hosts = ["docker://mol-rollout-edge"]
PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
LEDGER = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "artifacts" / "ledger" / "deployments.jsonl"
INFER = (
    "import json, urllib.request; req = urllib.request.Request('http://127.0.0.1:8000/v2/models/iris/infer', "
    "data=json.dumps({'inputs': []}).encode(), headers={'Content-Type': 'application/json'}); "
    "print(urllib.request.urlopen(req, timeout=10).read().decode())"
)


@pytest.fixture()
def edge(host):
    return host


@pytest.fixture()
def model():
    return testinfra.get_host("docker://mol-rollout-model")


def infer_through_haproxy(edge) -> dict:
    return json.loads(edge.check_output(f'python3 -c "{INFER}"'))


def container(model) -> dict:
    return json.loads(model.check_output("docker inspect model-iris"))[0]


def rollout(version: str) -> subprocess.CompletedProcess:
    """The site repository's own rollout playbook, on this scenario's inventory."""
    cmd = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        str(PROJECT / "playbooks" / "rollout.yml"),
        "-e",
        "rollout_model=iris",
        "-e",
        f"rollout_version={version}",
        "-e",
        f"rollout_ledger_file={LEDGER}",
    ]
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="false", ANSIBLE_NOCOLOR="true")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, check=False)


def ledger() -> list[dict]:
    return [json.loads(line) for line in LEDGER.read_text().splitlines()]


def test_an_inference_answers_through_haproxy(edge):
    answer = infer_through_haproxy(edge)
    assert answer["outputs"][0]["data"] == [0]
    assert answer["model_version"] == "v1"


def test_the_model_runs_hardened_and_pinned_by_digest(edge, model):
    info = container(model)
    assert info["Config"]["Image"].startswith("172.28.94.10:5000/mol-iris@sha256:")
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert info["HostConfig"]["CapDrop"] == ["ALL"]
    assert info["Config"]["User"] == "10001:10001"
    # The digest it runs is the one the registry serves for its version's tag.
    tag = info["Config"]["Labels"]["io.mlfleet.model.version"]
    head = model.check_output(
        'python3 -c "import ssl,urllib.request; r=urllib.request.Request('
        f"'https://172.28.94.10:5000/v2/mol-iris/manifests/{tag}', method='HEAD', headers={{'Accept': "
        "'application/vnd.docker.distribution.manifest.v2+json'}); "
        "print(urllib.request.urlopen(r, context=ssl.create_default_context()).headers['Docker-Content-Digest'])\""
    )
    assert info["Config"]["Image"].endswith("@" + head.strip())


def test_a_new_version_rolls_out_and_the_ledger_records_it(edge, model):
    res = rollout("v2")
    assert res.returncode == 0, res.stdout[-3000:]
    assert "mol-rollout-model: v1 -> v2" in res.stdout
    assert infer_through_haproxy(edge)["model_version"] == "v2"
    assert container(model)["Config"]["Labels"]["io.mlfleet.model.version"] == "v2"
    last = ledger()[-1]
    assert (last["host"], last["result"], last["from_version"], last["version"]) == (
        "mol-rollout-model",
        "deployed",
        "v1",
        "v2",
    )
    assert last["digest"].startswith("sha256:")


def test_a_bad_version_is_stopped_by_the_gate_and_rolled_back(edge, model):
    before = len(ledger())
    res = rollout("v3-bad")
    assert res.returncode != 0
    # Molecule's ansible.cfg sends failures to stderr (display_failed_stderr).
    out = res.stdout + res.stderr
    assert "Rollout of iris v3-bad stopped at mol-rollout-model (gate)" in out, out[-3000:]
    assert "check 'infer' failed" in out
    assert "expected [0] got [1]" in out
    assert container(model)["Config"]["Labels"]["io.mlfleet.model.version"] == "v2"
    answer = infer_through_haproxy(edge)
    assert (answer["model_version"], answer["outputs"][0]["data"]) == ("v2", [0])
    assert [(r["result"], r.get("attempted_version")) for r in ledger()[before:]] == [
        ("failed", None),
        ("rolled_back", "v3-bad"),
    ]
