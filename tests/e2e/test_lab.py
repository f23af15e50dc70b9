"""The lab behaves like a fleet of real on-prem hosts (issue: foundation)."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from labkit import LAB_INVENTORY, LAB_NAME, LAB_STATE, Lab, env, load_inventory, playbook, recap, run

# Written by `make lab-up LAB_CPU_HOSTS=N` for N > 2, removed at N = 2.
SCALE_FILE = LAB_INVENTORY / "scale_out.yml"
EXPECTED_HOSTS = {"lb-1", "gpu-1", "gpu-2", "cpu-1", "cpu-2", "obs-1"}


def test_inventory_has_exactly_the_lab_hosts_and_groups(lab: Lab) -> None:
    assert set(lab.hosts) == EXPECTED_HOSTS
    assert lab.groups["gpu_inference"] == ["gpu-1", "gpu-2"]
    assert lab.groups["cpu_inference"] == ["cpu-1", "cpu-2"]
    assert lab.groups["loadbalancers"] == ["lb-1"]
    assert lab.groups["monitoring"] == ["obs-1"]


def test_every_host_answers_over_ssh_as_deploy(lab: Lab) -> None:
    results = lab.ansible("all", "ansible.builtin.command", "id -un")
    assert set(results) == EXPECTED_HOSTS
    assert {r["stdout"] for r in results.values()} == {"deploy"}


def test_become_gives_root_without_a_password(lab: Lab) -> None:
    results = lab.ansible("all", "ansible.builtin.command", "id -u", become=True)
    assert {h: r["stdout"] for h, r in results.items()} == dict.fromkeys(EXPECTED_HOSTS, "0")


def test_each_host_runs_systemd_as_pid_1(lab: Lab) -> None:
    results = lab.ansible("all", "ansible.builtin.command", "systemctl is-system-running --wait", check=False)
    states = {h: r.get("stdout") for h, r in results.items()}
    if states != dict.fromkeys(EXPECTED_HOSTS, "running"):
        # Name the units that failed, and why, in the failure (CI keeps nothing else of the lab).
        failed = lab.ansible(
            "all",
            "ansible.builtin.shell",
            "systemctl --failed --no-legend --plain; journalctl -b -p err --no-pager -n 20",
            become=True,
            check=False,
        )
        pytest.fail(f"{states}\n" + "\n".join(f"{h}: {r.get('stdout')}" for h, r in sorted(failed.items())))


def test_root_login_is_refused_even_with_an_authorized_key(lab: Lab) -> None:
    pub = (LAB_STATE / "ssh" / "id_ed25519.pub").read_text().strip()
    lab.sh("cpu-1", f"install -d -m 0700 /root/.ssh && echo '{pub}' > /root/.ssh/authorized_keys", become=True)
    try:
        res = lab.ssh("cpu-1", "true", "root")
        assert res.returncode == 255
        assert "Permission denied" in res.stderr
    finally:
        lab.sh("cpu-1", "rm -f /root/.ssh/authorized_keys", become=True)


@pytest.mark.parametrize("host", sorted(EXPECTED_HOSTS))
def test_password_login_is_not_offered(lab: Lab, host: str) -> None:
    res = lab.ssh(
        host,
        "true",
        "deploy",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "PreferredAuthentications=password,keyboard-interactive",
    )
    assert res.returncode == 255
    # sshd lists the methods it still accepts: only public keys.
    assert "Permission denied (publickey)." in res.stderr


def test_hosts_resolve_and_reach_each_other_by_name(lab: Lab) -> None:
    names = sorted(EXPECTED_HOSTS)
    # Each host answers for every name: the SSH banner, or the address it resolved and the error.
    script = (
        "import socket,json\n"
        "def probe(n):\n"
        "    try:\n"
        "        return socket.create_connection((n, 22), timeout=5).recv(7).decode()\n"
        "    except OSError as exc:\n"
        "        return f'{socket.gethostbyname(n)}: {exc!r}'\n"
        f"print(json.dumps({{n: probe(n) for n in {names!r}}}))"
    )
    packed = base64.b64encode(script.encode()).decode()
    command = f"python3 -c \"import base64;exec(base64.b64decode('{packed}'))\""
    results = lab.ansible("all", "ansible.builtin.command", command)
    banners = {host: json.loads(result["stdout"]) for host, result in results.items()}
    assert banners == dict.fromkeys(EXPECTED_HOSTS, dict.fromkeys(names, "SSH-2.0"))


def test_registry_serves_tls_from_the_lab_ca_and_hosts_trust_it(lab: Lab) -> None:
    address = lab.hosts["obs-1"]
    # From the control node: refused with the system trust store, accepted with the lab CA.
    with pytest.raises(urllib.error.URLError) as err:
        urllib.request.urlopen(f"https://{address}:5000/v2/", timeout=10)
    assert isinstance(err.value.reason, ssl.SSLCertVerificationError)
    ctx = ssl.create_default_context(cafile=str(LAB_STATE / "pki" / "ca.crt"))
    with urllib.request.urlopen(f"https://{address}:5000/v2/", timeout=10, context=ctx) as resp:
        assert resp.status == 200
    # From inference hosts, by name, with nothing but the system trust store.
    probe = "import urllib.request;print(urllib.request.urlopen('https://obs-1:5000/v2/').status)"
    results = lab.ansible("inference", "ansible.builtin.command", f"python3 -c {json.dumps(probe)}")
    assert {r["stdout"] for r in results.values()} == {"200"}


def test_a_second_lab_up_changes_nothing(lab: Lab) -> None:
    res = playbook("lab/up.yml")
    counts = recap(res.stdout)
    assert set(counts) == EXPECTED_HOSTS | {"localhost"}
    assert {h: c["changed"] for h, c in counts.items()} == dict.fromkeys(counts, 0)


@pytest.fixture(scope="module")
def grown(lab: Lab) -> Iterator[subprocess.CompletedProcess[str]]:
    """One lab up (~1 min) for two claims: it completes a half-up lab (cpu-2 stopped) and grows the
    CPU group to 3 hosts (make lab-up LAB_CPU_HOSTS=3). The grow test shrinks the lab back; should it
    not get that far, this does."""
    run(["docker", "stop", f"{LAB_NAME}-cpu-2"], check=True)
    yield playbook("lab/up.yml", "-e", "lab_cpu_hosts=3", check=False)
    if SCALE_FILE.exists():
        playbook("lab/up.yml", "-e", "lab_cpu_hosts=2", check=False)


def test_a_half_up_lab_is_completed(lab: Lab, grown: subprocess.CompletedProcess[str]) -> None:
    assert grown.returncode == 0, grown.stdout[-3000:]
    assert lab.ansible("cpu-2", "ansible.builtin.ping")["cpu-2"]["ping"] == "pong"


def test_lab_cpu_hosts_grows_the_cpu_group_and_shrinks_it_back(
    lab: Lab, grown: subprocess.CompletedProcess[str]
) -> None:
    """make lab-up LAB_CPU_HOSTS=N (benchmarks at fleet scale) adds real hosts, and N=2 removes them."""
    try:
        assert grown.returncode == 0, grown.stdout[-3000:]
        assert set(recap(grown.stdout)) == EXPECTED_HOSTS | {"localhost", "cpu-3"}
        scaled = load_inventory()
        assert scaled.groups["scale_out"] == ["cpu-3"]
        assert scaled.hosts["cpu-3"] == "172.28.10.103"
        who = lab.ansible("cpu-3", "ansible.builtin.command", "id -un")
        assert who["cpu-3"]["stdout"] == "deploy"
    finally:
        res = playbook("lab/up.yml", "-e", "lab_cpu_hosts=2", check=False)
    assert res.returncode == 0, res.stdout[-3000:]
    assert not SCALE_FILE.exists()
    assert set(recap(res.stdout)) == EXPECTED_HOSTS | {"localhost"}
    gone = run(["docker", "ps", "-aq", "--filter", f"name=^{LAB_NAME}-cpu-3$"], check=True)
    assert gone.stdout.strip() == ""


def test_too_few_cpu_hosts_is_refused_before_any_change(lab: Lab) -> None:
    res = playbook("lab/up.yml", "-e", "lab_cpu_hosts=1", check=False)
    assert res.returncode != 0
    assert "it must be at least the 2 CPU hosts of the lab inventory" in res.stdout
    assert set(recap(res.stdout)) == {"localhost"}
    assert recap(res.stdout)["localhost"]["changed"] == 0


def test_a_missing_docker_engine_says_what_to_do(lab: Lab) -> None:
    e = env()
    e["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    res = playbook("lab/up.yml", check=False, env=e)
    assert res.returncode != 0
    assert "No docker engine answers" in res.stdout
    assert "apt-get install -y docker.io" in res.stdout
    assert "Traceback" not in res.stdout + res.stderr


def test_an_unknown_inventory_path_is_an_error(lab: Lab) -> None:
    res = playbook("playbooks/site.yml", "-i", "inventories/does-not-exist", check=False)
    assert res.returncode != 0
    assert "inventories/does-not-exist" in res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr


def test_a_foreign_container_with_a_lab_name_is_reported(lab: Lab) -> None:
    """A name clash is reported before anything changes, with the command that clears it."""
    run(["docker", "rm", "-f", "mlfleet-clash-cpu-1"])
    run(
        ["docker", "run", "-d", "--name", "mlfleet-clash-cpu-1", "mlfleet-lab-base:current", "sleep", "600"], check=True
    )
    try:
        res = playbook("lab/up.yml", "-e", "lab_name=mlfleet-clash", "--tags", "lab_preflight", check=False)
        assert res.returncode != 0
        assert "does not belong to lab mlfleet-clash" in res.stdout
        assert "docker rm -f mlfleet-clash-cpu-1" in res.stdout
    finally:
        run(["docker", "rm", "-f", "mlfleet-clash-cpu-1"])
