"""baseline: what an operator and a service observe on a converged host (values from converge.yml)."""

import re

import pytest

NOFILE = 16384  # baseline_limits_nofile
SSH = "ssh -i /root/mol-ssh/{key} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
SYSCTL = {
    "vm.swappiness": "1",
    "net.core.somaxconn": "8192",
    "fs.file-max": "2097152",
    "fs.inotify.max_user_watches": "524288",
    "vm.max_map_count": "1048576",
    "net.ipv4.tcp_keepalive_time": "600",
}
SYSCTL_FILE = "/etc/sysctl.d/60-mlfleet-baseline.conf"


@pytest.fixture(scope="module")
def ceiling(host):
    """What a login can get: the values asked, or PID 1's hard limits without CAP_SYS_RESOURCE."""
    status = host.file("/proc/self/status").content_string
    capbnd = int(re.search(r"CapBnd:\s+([0-9a-f]+)", status).group(1), 16)
    limits = host.file("/proc/1/limits").content_string
    nofile_hard = re.search(r"Max open files +\S+ +(\S+)", limits).group(1)
    memlock_hard = re.search(r"Max locked memory +\S+ +(\S+)", limits).group(1)
    nofile = NOFILE if capbnd & (1 << 24) or nofile_hard == "unlimited" else min(NOFILE, int(nofile_hard))
    memlock = "unlimited" if capbnd & (1 << 24) or memlock_hard == "unlimited" else str(int(memlock_hard) // 1024)
    return {"nofile": str(nofile), "memlock": memlock}


def ssh(host, user, key, command):
    return host.run(f"{SSH.format(key=key)} {user}@127.0.0.1 {command}")


# --- Operators -------------------------------------------------------------------------------


def test_operator_logs_in_with_the_listed_key_and_gets_the_limits(host, ceiling):
    res = ssh(host, "ops-alice", "current", "'ulimit -Sn; ulimit -Hn; ulimit -l; id -nG'")
    assert res.rc == 0, res.stderr
    soft, hard, memlock, groups = res.stdout.splitlines()
    assert [soft, hard, memlock] == [ceiling["nofile"], ceiling["nofile"], ceiling["memlock"]]
    assert {"adm", "systemd-journal"} <= set(groups.split())


def test_the_stale_key_is_refused(host):
    res = ssh(host, "ops-alice", "stale", "true")
    assert res.rc == 255
    assert "Permission denied" in res.stderr


def test_an_operator_without_keys_cannot_log_in_over_ssh(host):
    res = ssh(host, "ops-carol", "current", "true")
    assert res.rc == 255
    assert "Permission denied" in res.stderr


def test_su_login_gets_the_nofile_limit(host, ceiling):
    assert host.check_output("su - ops-carol -c 'ulimit -n'") == ceiling["nofile"]


def test_nopasswd_operator_runs_sudo_without_a_password(host):
    assert "(ALL : ALL) NOPASSWD: ALL" in host.check_output("sudo -l -U ops-alice")
    res = ssh(host, "ops-alice", "current", "'sudo -n id -u'")
    assert res.rc == 0, res.stderr
    assert res.stdout.strip() == "0"


def test_password_operator_must_give_a_password(host):
    rules = host.check_output("sudo -l -U ops-bob")
    assert "(ALL : ALL) ALL" in rules
    assert "NOPASSWD" not in rules
    res = host.run("su - ops-bob -c 'sudo -n true'")
    assert res.rc != 0
    assert "a password is required" in res.stderr


def test_operator_without_sudo_is_refused(host):
    assert "is not allowed to run sudo" in host.check_output("sudo -l -U ops-carol")


def test_former_operator_is_gone_with_the_sudo_rule(host):
    assert host.run("getent passwd ops-gone").rc == 2
    assert not host.file("/home/ops-gone").exists
    assert not host.file("/etc/sudoers.d/mlfleet-ops-gone").exists
    assert host.run("visudo -c").rc == 0


# --- Services, journal, time ------------------------------------------------------------------


def test_services_get_the_default_nofile_limit(host, ceiling):
    out = host.check_output("systemd-run --wait --pipe --quiet sh -c 'ulimit -Sn; ulimit -Hn'")
    assert out.splitlines() == [ceiling["nofile"], ceiling["nofile"]]


def test_journald_applies_the_size_cap_on_disk(host):
    # journald logs its storage and cap when it opens the system journal (after the role's restart).
    out = host.check_output("journalctl --no-pager -o cat -u systemd-journald")
    last = [line for line in out.splitlines() if line.startswith("System Journal")][-1]
    assert re.match(r"System Journal \(/var/log/journal/[0-9a-f]+\) is .*, max 200\.0M, ", last), last


def test_journald_writes_to_var_log_journal(host):
    host.check_output("logger -t mol-baseline-probe persistent-journal-check")
    res = host.run("journalctl -D /var/log/journal --no-pager -o cat -t mol-baseline-probe")
    assert "persistent-journal-check" in res.stdout
    paths = re.findall(r"^File path: (\S+)", host.check_output("journalctl --header"), re.M)
    assert paths
    assert all(p.startswith("/var/log/journal/") for p in paths), paths


def test_time_zone(host):
    assert host.check_output("timedatectl show -p Timezone --value") == "Europe/Berlin"
    assert host.check_output("date +%Z") in ("CET", "CEST")
    assert host.file("/etc/timezone").content_string == "Europe/Berlin\n"


def test_chrony_parses_exactly_the_configured_sources(host):
    out = host.check_output("chronyd -p -f /etc/chrony/chrony.conf")
    sources = [line for line in out.splitlines() if line.split()[:1] in (["server"], ["pool"])]
    assert sources == ["server 127.0.0.1 iburst", "server 127.0.0.2 iburst"]
    assert host.service("chrony").is_enabled


def test_chronyd_polls_the_configured_servers(host):
    # chrony.service cannot run in a container (no CAP_SYS_TIME); chronyd -x (no clock control)
    # loads the same file and must list its servers. Both are loopback: no traffic leaves the host.
    if host.service("chrony").is_running:
        out = host.check_output("chronyc -n sources")
    else:
        host.check_output("chronyd -x -f /etc/chrony/chrony.conf")
        try:
            out = host.check_output("sleep 1; chronyc -n sources")
        finally:
            host.run("kill $(cat /run/chrony/chronyd.pid)")
    assert re.search(r"^\^. +127\.0\.0\.1 ", out, re.M), out
    assert re.search(r"^\^. +127\.0\.0\.2 ", out, re.M), out


# --- Names, kernel, updates -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, ip",
    [
        ("mol-peer-1", "198.51.100.11"),
        ("mol-peer-2", "198.51.100.12"),
        ("registry.mol.test", "198.51.100.50"),
        ("registry", "198.51.100.50"),
    ],
)
def test_inventory_peers_resolve(host, name, ip):
    assert host.check_output("getent hosts %s", name).split()[0] == ip


def test_boot_applies_exactly_the_merged_sysctl_settings(host):
    # /proc/sys is read-only in a container, so check what systemd-sysctl will apply at boot: the
    # last value of each key across every sysctl.d file, in its own order, is the role's.
    merged = host.check_output("/lib/systemd/systemd-sysctl --cat-config")
    final, source, current = {}, {}, None
    for line in merged.splitlines():
        if line.startswith("# /"):
            current = line[2:].strip()
        elif line.strip() and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            final[key.strip().lstrip("-")] = value.strip()
            source[key.strip().lstrip("-")] = current
    for key, value in SYSCTL.items():
        assert final.get(key) == value, key
        assert source[key] == SYSCTL_FILE, key
        # The key exists in this kernel, so `sysctl -p` would not fail on it.
        assert host.run("sysctl -n %s", key).rc == 0, key
    assert "fs.inotify.max_user_instances" not in host.file(SYSCTL_FILE).content_string


def test_unattended_upgrades_take_security_updates_only(host):
    assert host.check_output("apt-config shell V APT::Periodic::Unattended-Upgrade") == "V='1'"
    origins = host.check_output(
        'python3 -c "import apt_pkg, importlib.machinery as m, importlib.util as u;'
        "l=m.SourceFileLoader('uu','/usr/bin/unattended-upgrade');uu=u.module_from_spec(u.spec_from_loader('uu',l));"
        "l.exec_module(uu);apt_pkg.init_config();print('\\n'.join(uu.get_allowed_origins()))\""
    )
    assert set(origins.splitlines()) == {"origin=Debian,codename=bookworm-security,label=Debian-Security"}
    assert host.service("apt-daily-upgrade.timer").is_enabled
