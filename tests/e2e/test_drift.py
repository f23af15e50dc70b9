"""Drift runs on the converged lab (issue: drift). Tests run in file order and build on each other:
the converged fleet with three hand edits reports exactly those and nothing else (the check phase of
one --remediate run, which then puts them back); a host that cannot be reached fails the run without
hiding the others. Secrets never reach a report or artifact.

They run first on the converged fleet (lab_converged_first), before any other test rolls a version
out or back: the fleet is then exactly as ``converged`` left it (site.yml with the release v1), and
every drift run compares against site.yml with that release in a vars file, as an operator's
scheduled check would. Remediation leaves the fleet as converged for the tests after these.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from labkit import BIN, LAB_INVENTORY, Lab, mitogen_env, run

pytestmark = pytest.mark.lab_converged_first

INFERENCE = ["cpu-1", "cpu-2", "gpu-1", "gpu-2"]
ALL_HOSTS = ["cpu-1", "cpu-2", "gpu-1", "gpu-2", "lb-1", "localhost", "obs-1"]
SSHD_TASK = "Write sshd_config | CIS 5.2.4-5.2.22"
EXPORTER_TASK = "Enable and start the node exporter"
MODEL_TASK = "Run the model containers, one per replica"
# A value that must never leave the vault file: the registry password of a no_log task.
SECRET = f"drift-e2e-secret-{uuid.uuid4().hex}"


class DriftRun:
    def __init__(self, proc: subprocess.CompletedProcess[str], textfile_dir: Path) -> None:
        self.rc = proc.returncode
        self.output = proc.stdout + proc.stderr
        self.folder = Path(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else Path("/nonexistent")
        self.textfile = textfile_dir / "mlfleet_drift.prom"

    @property
    def report(self) -> dict:
        return json.loads((self.folder / "report.json").read_text())

    def hosts(self, phase: int = 0) -> dict[str, dict]:
        return self.report["runs"][phase]["hosts"]

    def drifted(self, phase: int = 0) -> dict[str, list[str]]:
        """Host -> names of the tasks that would change it (handlers excluded), for drifted hosts."""
        return {
            name: sorted(c["task"] for c in h["changes"] if not c["handler"])
            for name, h in self.hosts(phase).items()
            if any(not c["handler"] for c in h["changes"])
        }

    def junit_failures(self) -> list[tuple[str, str]]:
        root = ET.parse(self.folder / "report.junit.xml").getroot()
        return sorted(
            (case.get("classname", ""), case.get("name", ""))
            for case in root.iter("testcase")
            if case.find("failure") is not None
        )

    def __repr__(self) -> str:  # shown by pytest when an assertion fails
        return f"DriftRun(rc={self.rc}, folder={self.folder})\n{self.output[-4000:]}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("drift")
    # The release the fleet was converged with (``converged``: v1, where the inventory pins v2).
    (folder / "release.yml").write_text("rollout_version: v1\n")
    return folder


@pytest.fixture(scope="module")
def secret_vars(workdir: Path) -> list[str]:
    """A vault-encrypted vars file with a registry login; the lab registry accepts any credentials."""
    password_file = workdir / "vault-pass"
    password_file.write_text(f"{uuid.uuid4().hex}\n")
    password_file.chmod(0o600)
    vars_file = workdir / "registry-login.yml"
    vars_file.write_text(f"model_server_registry_username: drift-e2e\nmodel_server_registry_password: {SECRET}\n")
    run(
        [str(BIN / "ansible-vault"), "encrypt", "--vault-password-file", str(password_file), str(vars_file)],
        check=True,
    )
    assert SECRET not in vars_file.read_text()
    return ["-e", str(vars_file), "--vault-password-file", str(password_file)]


def drift(workdir: Path, *args: str) -> DriftRun:
    textfile_dir = workdir / "textfile"
    textfile_dir.mkdir(exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "mlfleet.drift",
        "-i",
        str(LAB_INVENTORY),
        "--artifacts-dir",
        str(workdir / "reports"),
        "--textfile-dir",
        str(textfile_dir),
        "-q",
        "-e",
        str(workdir / "release.yml"),
        *args,
    ]
    # Under Mitogen (labkit.mitogen_env): the tool honours ANSIBLE_CONFIG, as an operator's would.
    return DriftRun(run(cmd, timeout=3600, env=mitogen_env()), textfile_dir)


def files_containing(folder: Path, needle: str) -> list[Path]:
    data = needle.encode()
    return [p for p in folder.rglob("*") if p.is_file() and data in p.read_bytes()]


@pytest.fixture(scope="module")
def hand_edited(lab: Lab, converged: str, workdir: Path, secret_vars: list[str]) -> DriftRun:
    """Three hand edits on the converged fleet, then one scheduled run with --remediate. Its check
    phase is what a check-only run reports: every task of every host but the three edited ones finds
    nothing to change. Then it puts the edits back and re-checks. One run of the tool, not a clean
    check, a check of the edits and a remediation that checks again (each check of the lab costs
    ~3.5 min of CI). Exit 2, the JUnit failures and the textfile metric of a check-only run that
    finds drift are asserted on real runs by the unit tests (tests/unit/test_drift.py)."""
    lab.sh("cpu-2", "sed -i 's/^MaxAuthTries .*/MaxAuthTries 10/' /etc/ssh/sshd_config", become=True)
    lab.sh("gpu-1", "systemctl stop prometheus-node-exporter", become=True)
    # Someone "fixes" cpu-1 by hand with another tag and none of the container hardening.
    lab.sh(
        "cpu-1",
        "docker pull -q 172.28.10.30:5000/iris:v2 && docker rm -f model-iris && "
        "docker run -d --name model-iris --restart unless-stopped -p 8080:8080 -p 8082:8082 "
        "--log-driver journald --log-opt tag=model-iris 172.28.10.30:5000/iris:v2",
        become=True,
    )
    return drift(workdir, "--remediate", *secret_vars)


def test_a_converged_fleet_reports_exactly_the_hand_edits_and_nothing_else(hand_edited: DriftRun) -> None:
    res = hand_edited
    assert res.report["runs"][0]["phase"] == "check", res
    assert res.drifted() == {"cpu-1": [MODEL_TASK], "cpu-2": [SSHD_TASK], "gpu-1": [EXPORTER_TASK]}, res
    assert {n: h["status"] for n, h in res.hosts().items()} == {
        "cpu-1": "drift",
        "cpu-2": "drift",
        "gpu-1": "drift",
        "gpu-2": "clean",
        "lb-1": "clean",
        "localhost": "clean",
        "obs-1": "clean",
    }, res
    changes = {(n, c["task"]): c for n, h in res.hosts().items() for c in h["changes"]}
    assert "-MaxAuthTries 10\n+MaxAuthTries 3" in changes[("cpu-2", SSHD_TASK)]["diff"]
    assert "172.28.10.30:5000/iris:v2" in changes[("cpu-1", MODEL_TASK)]["diff"]
    # Every drifted task is in the Markdown report, under its host.
    markdown = (res.folder / "report.md").read_text()
    assert all(host in markdown and task in markdown for host, task in changes), markdown[-3000:]


def test_secrets_stay_out_of_every_report_artifact_and_output(hand_edited: DriftRun) -> None:
    # The secret passed a no_log task on every inference host; nothing written about the run has it.
    assert files_containing(hand_edited.folder, SECRET) == []
    assert files_containing(hand_edited.textfile.parent, SECRET) == []
    assert SECRET not in hand_edited.output


def test_remediate_puts_the_hand_edits_back(lab: Lab, hand_edited: DriftRun) -> None:
    res = hand_edited
    assert res.rc == 0, res
    phases = [r["phase"] for r in res.report["runs"]]
    assert phases == ["check", "remediate", "recheck"], res
    assert sorted(res.report["runs"][1]["limit"].split(",")) == ["cpu-1", "cpu-2", "gpu-1"]
    # The recheck looks again at the three hosts it changed; the final state (summary, JUnit, metrics)
    # is those as rechecked and the others as checked: all clean.
    assert {n: h["status"] for n, h in res.hosts(2).items()} == dict.fromkeys(["cpu-1", "cpu-2", "gpu-1"], "clean")
    assert {n: h["status"] for n, h in res.report["summary"].items()} == dict.fromkeys(ALL_HOSTS, "clean"), res
    assert res.junit_failures() == []
    metrics = res.textfile.read_text()
    assert 'mlfleet_drift_changes{host="cpu-2"} 0' in metrics
    assert "mlfleet_drift_run_success 1" in metrics
    assert "MaxAuthTries 3" in lab.sh("cpu-2", "grep ^MaxAuthTries /etc/ssh/sshd_config", become=True).stdout
    assert lab.sh("gpu-1", "systemctl is-active prometheus-node-exporter").stdout.strip() == "active"
    labels = lab.sh("cpu-1", "docker inspect --format '{{json .Config.Labels}}' model-iris", become=True).stdout
    assert json.loads(labels)["io.mlfleet.model.version"] == "v1"


def test_a_host_that_cannot_be_reached_fails_the_run_and_the_others_are_still_checked(
    lab: Lab, converged: str, workdir: Path
) -> None:
    # The control node loses SSH to gpu-2 (down, or cut off: Ansible sees the same unreachable host);
    # an established connection is reset, a new one refused.
    cut = ["OUTPUT", "-d", lab.hosts["gpu-2"], "-p", "tcp", "--dport", "22"]
    cut += ["-j", "REJECT", "--reject-with", "tcp-reset"]
    run(["iptables", "-I", *cut], check=True)
    try:
        # The GPU group (gpu-1 and gpu-2): every play still runs on the host that answers.
        res = drift(workdir, "--limit", "gpu_inference")
    finally:
        run(["iptables", "-D", *cut], check=True)

    assert res.rc == 1, res
    assert "| gpu-2 | UNREACHABLE |" in (res.folder / "report.md").read_text(), res
    hosts = res.hosts()
    assert hosts["gpu-2"]["status"] == "unreachable"
    assert hosts["gpu-1"]["status"] == "clean"
    metrics = res.textfile.read_text()
    assert 'mlfleet_drift_changes{host="gpu-1"} 0' in metrics
    assert 'mlfleet_drift_unreachable{host="gpu-2"} 1' in metrics
    assert "mlfleet_drift_run_success 0" in metrics

    # Reachable again, the scheduled run (with --remediate) finds the host as it was left: clean.
    back = drift(workdir, "--limit", "gpu-2", "--remediate")
    assert back.rc == 0, back
    assert back.hosts(len(back.report["runs"]) - 1)["gpu-2"]["status"] == "clean"
    assert 'mlfleet_drift_unreachable{host="gpu-2"} 0' in back.textfile.read_text()
