"""The hardening role's kernel-level controls, live on a host with its own kernel (issue 19, item 2).

The lab's containers share the control node's kernel, so no container can show a kernel parameter, an
audit rule or a refused module. `make compliance` boots a Debian 12 VM with Debian's kernel under QEMU
(lab/vm_up.yml), hardens it with playbooks/hosts.yml and runs these tests against it over SSH as the
deploy user, as Ansible reaches it. What each test expects comes from the role's defaults, so a
control the role adds is checked here without editing the test.
"""

from __future__ import annotations

import shlex
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "collections" / "ansible_collections" / "mlfleet" / "fleet" / "roles" / "hardening"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
INVENTORY = yaml.safe_load((ROOT / "inventories" / "vm" / "hosts.yml").read_text())
VM = INVENTORY["all"]["children"]["kernel_hosts"]["hosts"]["vm-1"]
KEY = ROOT / ".lab" / "ssh" / "id_ed25519"
SYSCTL_FILE = "/etc/sysctl.d/70-mlfleet-hardening.conf"


def ssh(command: str, sudo: bool = True, timeout: int = 120) -> subprocess.CompletedProcess:
    remote = f"sudo -n sh -c {shlex.quote(command)}" if sudo else command
    argv = ["ssh", "-i", str(KEY), "-p", str(VM["ansible_port"]), "-o", "BatchMode=yes"]
    argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
    return subprocess.run(
        [*argv, f"deploy@{VM['ansible_host']}", remote], capture_output=True, text=True, timeout=timeout
    )


def out(command: str) -> str:
    res = ssh(command)
    assert res.returncode == 0, (command, res.stdout, res.stderr)
    return res.stdout.strip()


@pytest.fixture(scope="session", autouse=True)
def vm_is_up() -> None:
    if not KEY.is_file():
        pytest.fail("No lab key in .lab/ssh: bring the VM up first (ansible-playbook -i inventories/vm lab/vm_up.yml)")
    res = ssh("true", sudo=False, timeout=60)
    assert res.returncode == 0, f"vm-1 does not answer over SSH: {res.stderr}"


def test_the_host_runs_its_own_kernel_not_in_a_container() -> None:
    assert out("systemd-detect-virt --container || true") == "none"
    assert out("uname -r") in out("ls /boot")


def test_every_kernel_parameter_the_role_writes_is_live() -> None:
    written = {}
    for line in out(f"cat {SYSCTL_FILE}").splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = (part.strip() for part in line.split("=", 1))
            written[key.lstrip("-")] = value
    # The file holds every default of the role, and forwarding off on a host without Docker.
    expected = {key: str(value) for key, value in DEFAULTS["hardening_sysctl"].items()}
    expected["net.ipv4.ip_forward"] = "0"
    assert written == expected
    keys = " ".join(sorted(written))
    live = dict(zip(sorted(written), out(f"sysctl -n {keys}").splitlines(), strict=True))
    # sysctl prints a list value (ip_local_port_range) with a tab where the file has a space.
    assert {k: v for k, v in live.items() if v.split() != written[k].split()} == {}


def test_the_audit_rules_are_loaded_and_record_a_change_to_a_watched_path() -> None:
    assert "enabled 1" in out("auditctl -s")
    loaded = out("auditctl -l")
    for watched in ("/etc/passwd", "/etc/shadow", "/etc/sudoers", "/etc/ssh/sshd_config"):
        assert f"-w {watched} -p wa" in loaded
    assert "-S init_module,finit_module,delete_module" in loaded or "-S init_module" in loaded
    # A write to the model store is an event under the role's key, found by ausearch.
    store = DEFAULTS["hardening_audit_watch_paths"][0]
    marker = f"kernel-test-{uuid.uuid4().hex[:8]}"
    out(f"mkdir -p {store} && echo x > {store}/{marker} && rm -f {store}/{marker}")
    deadline = time.monotonic() + 60
    # --input-logs: without a terminal, ausearch would read its stdin instead of the logs.
    while marker not in ssh("ausearch --input-logs -k mlfleet-models -i").stdout:
        assert time.monotonic() < deadline, "no audit event for the write to the model store"
        time.sleep(2)


@pytest.mark.parametrize("module", DEFAULTS["hardening_modules_disabled"])
def test_a_disabled_module_refuses_to_load(module: str) -> None:
    # modprobe would still load the module's dependencies first; the module itself runs /bin/false.
    assert out(f"modprobe --dry-run --verbose {module}").splitlines()[-1] == "install /bin/false"
    res = ssh(f"modprobe {module}")
    assert res.returncode != 0
    assert module.replace("-", "_") not in out("cut -d' ' -f1 /proc/modules").split()


PTRACE_ATTACH = "import ctypes, sys; libc = ctypes.CDLL(None, use_errno=True); \
r = libc.ptrace(16, int(sys.argv[1]), 0, 0); print(r, ctypes.get_errno())"


def test_an_unprivileged_user_cannot_read_the_kernel_log_or_attach_to_its_own_processes() -> None:
    assert ssh("dmesg", sudo=False).returncode != 0  # kernel.dmesg_restrict
    # Yama ptrace_scope 1: a process of the same user that is not a descendant cannot be attached to.
    pid = ssh("setsid sleep 120 >/dev/null 2>&1 < /dev/null & echo $!", sudo=False).stdout.strip()
    try:
        res = ssh(f"python3 -c {shlex.quote(PTRACE_ATTACH)} {pid}", sudo=False)
        assert res.stdout.split() == ["-1", "1"], res  # EPERM
    finally:
        ssh(f"kill {pid}", sudo=False)


def test_the_firewall_is_loaded_in_the_kernel() -> None:
    ruleset = out("nft list ruleset")
    assert "policy drop" in ruleset
    assert "tcp dport 22" in ruleset
