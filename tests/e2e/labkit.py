"""Helpers for end-to-end tests on the lab: run playbooks and ad-hoc modules, reach hosts over SSH."""

from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LAB_INVENTORY = ROOT / "inventories" / "lab"
LAB_STATE = ROOT / ".lab"
LAB_NAME = "mlfleet-lab"
# How long an end-to-end run waits for another one to give the lab back (MLFLEET_LAB_WAIT, seconds).
LAB_WAIT = float(os.environ.get("MLFLEET_LAB_WAIT", "1200"))
# The project's ansible.cfg plus the Mitogen strategy, for the runs that converge or check the whole
# fleet (see mitogen_env).
MITOGEN_CFG = ROOT / "artifacts" / "e2e" / "ansible-mitogen.cfg"
T = TypeVar("T")

sys.path.insert(0, str(ROOT / "tools"))
from ansible_cfgs import mitogen_config  # noqa: E402 - tools/ is not a package

RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)",
    re.M,
)


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}:{e.get('PATH', '')}"
    e["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    e["ANSIBLE_FORCE_COLOR"] = "false"
    e["ANSIBLE_NOCOLOR"] = "true"
    return e


def mitogen_env() -> dict[str, str]:
    """env() under the Mitogen strategy: the project's settings and strategy = mitogen_linear, the
    switch docs/benchmarks.md measures (2.6x faster no-change converges and drift runs on the lab,
    same recaps and reports). The full converge, the second site run and the drift runs use it, to
    keep CI in its time; every rollout, rollback and fault test runs under the default linear
    strategy, as operators run them, and every role's Molecule scenario converges, re-runs
    (idempotence) and checks under it too."""
    e = env()
    e["ANSIBLE_CONFIG"] = str(_write_mitogen_cfg())
    return e


@functools.cache
def _write_mitogen_cfg() -> Path:
    """MITOGEN_CFG, written once per test session."""
    MITOGEN_CFG.parent.mkdir(parents=True, exist_ok=True)
    MITOGEN_CFG.write_text(mitogen_config(ROOT))
    return MITOGEN_CFG


def run(cmd: list[str], check: bool = False, timeout: int = 1800, **kw) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        cmd, cwd=ROOT, env=kw.pop("env", None) or env(), capture_output=True, text=True, timeout=timeout, **kw
    )
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {res.returncode}\n{res.stdout[-6000:]}\n{res.stderr[-3000:]}")
    return res


def playbook(path: str, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "ansible-playbook"), path, *args], check=check, **kw)


@contextmanager
def lab_lease(name: str = LAB_NAME, wait: float = LAB_WAIT, lock_dir: Path | None = None) -> Iterator[None]:
    """Hold the lab for one end-to-end run. The lab is named, not per checkout: two runs on one docker
    engine (a CI run beside a developer's, a second checkout) would up, converge and tear down the same
    hosts under each other. The second run waits for the first; past ``wait`` it fails naming the holder."""
    path = (lock_dir or Path(tempfile.gettempdir())) / f"{name}.e2e.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline, told = time.monotonic() + wait, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "a process that wrote nothing"
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"the lab {name!r} is held by another end-to-end run ({holder}; lock {path}): "
                        f"let it finish or stop it, then run again (waited {wait:.0f} s; MLFLEET_LAB_WAIT sets it)"
                    ) from None
                if not told:
                    print(f"waiting for the lab {name!r}: held by {holder}", file=sys.__stderr__, flush=True)
                    told = True
                time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {ROOT}, since {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def recap(output: str) -> dict[str, dict[str, int]]:
    """Per-host counters of the PLAY RECAP."""
    return {
        m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")} for m in RECAP.finditer(output)
    }


@dataclass
class Lab:
    hosts: dict[str, str]  # inventory name -> address
    groups: dict[str, list[str]]  # group -> its hosts, those of its child groups included

    @property
    def key(self) -> Path:
        return LAB_STATE / "ssh" / "id_ed25519"

    def ansible(
        self,
        pattern: str,
        module: str,
        args: str = "",
        become: bool = False,
        check: bool = True,
        extra: tuple[str, ...] = (),
    ) -> dict[str, dict]:
        """Run an ad-hoc module; return each host's result (from the json callback)."""
        cmd = [str(BIN / "ansible"), pattern, "-i", str(LAB_INVENTORY), "-m", module]
        if args:
            cmd += ["-a", args]
        if become:
            cmd.append("--become")
        cmd += list(extra)
        e = env()
        e.update(ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
        res = run(cmd, env=e)
        try:
            results: dict[str, dict] = json.loads(res.stdout)["plays"][0]["tasks"][0]["hosts"]
        except (ValueError, KeyError, IndexError) as exc:
            raise AssertionError(
                f"ansible {pattern} -m {module}: no result\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
            ) from exc
        if check and (res.returncode != 0 or any(r.get("failed") or r.get("unreachable") for r in results.values())):
            raise AssertionError(f"ansible {pattern} -m {module} failed:\n{json.dumps(results, indent=1)[-4000:]}")
        return results

    def sh(self, host: str, command: str, become: bool = False, check: bool = True) -> subprocess.CompletedProcess:
        """Run a shell command on one lab host over SSH, as deploy (sudo when become)."""
        remote = f"sudo -n sh -c {json.dumps(command)}" if become else command
        res = self.ssh(host, remote)
        if check and res.returncode != 0:
            raise AssertionError(f"{host}: {command!r} exited {res.returncode}: {res.stdout}\n{res.stderr}")
        return res

    def ssh(
        self, host: str, remote: str, user: str = "deploy", *options: str, input_text: str | None = None
    ) -> subprocess.CompletedProcess:
        cmd = [
            "ssh",
            "-i",
            str(self.key),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
            *options,
            f"{user}@{self.hosts[host]}",
            remote,
        ]
        return run(cmd, timeout=300, input=input_text)


def load_inventory() -> Lab:
    res = run([str(BIN / "ansible-inventory"), "-i", str(LAB_INVENTORY), "--list"], check=True)
    data = json.loads(res.stdout)
    hostvars = data["_meta"]["hostvars"]
    hosts = {h: v["ansible_host"] for h, v in hostvars.items()}
    groups = {g: sorted(members(data, g)) for g in data if g != "_meta"}
    return Lab(hosts=hosts, groups=groups)


def members(data: dict, group: str) -> set[str]:
    """Every host of a group in `ansible-inventory --list` output, its child groups' included."""
    entry = data.get(group, {})
    hosts = set(entry.get("hosts", []))
    for child in entry.get("children", []):
        hosts |= members(data, child)
    return hosts


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 2.0) -> T:
    """Call predicate until it returns something truthy or timeout seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    last = predicate()
    while not last and time.monotonic() < deadline:
        time.sleep(interval)
        last = predicate()
    return last


def read_yaml(path: Path) -> object:
    return yaml.safe_load(path.read_text())


@contextmanager
def extra_host(lab: Lab, name: str, address: str) -> Iterator[None]:
    """A lab host outside the inventory (same image, network, key and labels as lab-up's), removed after use."""
    container = f"{LAB_NAME}-{name}"
    run(["docker", "rm", "-f", container])
    run(
        [
            "docker", "run", "-d", "--name", container, "--hostname", name,
            "--network", LAB_NAME, "--ip", address,
            "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN",
            "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
            "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
            "-v", f"{container}-docker:/var/lib/docker", "-e", "container=docker",
            "--label", f"mlfleet.lab={LAB_NAME}", "--label", f"mlfleet.lab.host={name}",
            "mlfleet-lab-base:current", "/sbin/init",
        ],
        check=True,
    )  # fmt: skip
    try:
        key = (LAB_STATE / "ssh" / "id_ed25519.pub").read_text()
        run(
            ["docker", "exec", "-i", container, "sh", "-c",
             "cat > /home/deploy/.ssh/authorized_keys && chown deploy: /home/deploy/.ssh/authorized_keys "
             "&& chmod 600 /home/deploy/.ssh/authorized_keys"],
            input=key,
            check=True,
        )  # fmt: skip
        lab.hosts[name] = address
        assert wait_for(lambda: lab.ssh(name, "true").returncode == 0, timeout=120), f"{name} never answered over SSH"
        yield
    finally:
        lab.hosts.pop(name, None)
        run(["docker", "rm", "-f", container])
        run(["docker", "volume", "rm", "-f", f"{container}-docker"])
