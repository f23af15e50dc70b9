"""tools/prereqs.sh: what `make demo` and `.ci/run` check first on the control node.

Each test runs the script with a PATH of its own: links to the real tools it may use, plus stubs
for `docker` (engine up or down), `id` (root or not) and the tools present (`python3` stands for a
Python whose venv module imports), and without the tools the test takes away.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "prereqs.sh"
REAL_TOOLS = ["sed", "ps", "seq", "sleep", "cat", "dirname"]


def stub(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.fixture()
def bin_dir(tmp_path: Path):
    """A PATH folder with the real helper tools; add or leave out the rest per test."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in REAL_TOOLS:
        (folder / tool).symlink_to(shutil.which(tool))
    return folder


def run(
    bin_dir: Path, *args: str, docker_up: bool, uid: int, have: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    stub(bin_dir / "docker", "exit 0" if docker_up else "echo 'Cannot connect to the Docker daemon' >&2; exit 1")
    stub(bin_dir / "id", f"echo {uid}")
    for tool in have:
        stub(bin_dir / tool, "exit 0")
    env = {"PATH": str(bin_dir), "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(
        ["/bin/bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_ready_control_node_passes_silently(bin_dir: Path) -> None:
    res = run(bin_dir, "--check", docker_up=True, uid=1000, have=("dockerd", "debootstrap", "ssh", "make", "python3"))
    assert (res.returncode, res.stderr) == (0, "")


def test_check_names_each_missing_package_and_the_command_that_installs_it(bin_dir: Path) -> None:
    res = run(bin_dir, "--check", docker_up=False, uid=0, have=("debootstrap",))
    assert res.returncode == 1
    assert "missing on this control node: docker.io openssh-client make python3-venv" in res.stderr
    assert "install them with: apt-get install -y docker.io openssh-client make python3-venv" in res.stderr
    assert "the docker engine is not running" in res.stderr
    assert "start it with: systemctl start docker" in res.stderr


def test_a_user_other_than_root_is_told_to_use_sudo_and_nothing_is_installed(bin_dir: Path) -> None:
    # apt-get is a stub that would leave a mark: it must not run.
    mark = bin_dir.parent / "apt-get-ran"
    stub(bin_dir / "apt-get", f"touch {mark}")
    res = run(bin_dir, docker_up=True, uid=1000, have=("dockerd", "ssh", "make", "debootstrap", "python3"))
    assert (res.returncode, res.stderr) == (0, "")
    (bin_dir / "make").unlink()
    res = run(bin_dir, docker_up=False, uid=1000, have=("dockerd", "ssh", "debootstrap", "python3"))
    assert res.returncode == 1
    assert "install them with: sudo apt-get install -y make" in res.stderr
    assert "start it with: sudo systemctl start docker" in res.stderr
    assert f"or let this script do all of it: sudo {SCRIPT}" in res.stderr
    assert not mark.exists()


def test_an_unknown_option_is_a_usage_error(bin_dir: Path) -> None:
    res = run(bin_dir, "--yes", docker_up=True, uid=0)
    assert res.returncode == 2
    assert "unknown option '--yes' (use --check, --test, --compliance or --help)" in res.stderr


def test_the_tests_also_need_chromium_and_only_they_do(bin_dir: Path) -> None:
    tools = ("dockerd", "debootstrap", "ssh", "make", "python3")
    assert run(bin_dir, "--check", docker_up=True, uid=0, have=tools).returncode == 0
    res = run(bin_dir, "--check", "--test", docker_up=True, uid=0, have=tools)
    assert res.returncode == 1
    assert "missing for the tests or the VM: chromium fonts-liberation" in res.stderr
    assert "install them with: apt-get install -y --no-install-recommends chromium fonts-liberation" in res.stderr
    assert run(bin_dir, "--test", "--check", docker_up=True, uid=0, have=(*tools, "chromium")).returncode == 0


def test_chromium_comes_without_its_recommends(bin_dir: Path, tmp_path: Path) -> None:
    """Its recommends bring udev, avahi-daemon, upower and CUPS: daemons on a CI host, none needed."""
    calls = tmp_path / "apt-calls"
    stub(bin_dir / "apt-get", f'echo "$*" >> {calls}')
    res = run(bin_dir, "--test", docker_up=True, uid=0, have=("dockerd", "debootstrap", "ssh", "make", "python3"))
    assert res.returncode == 0, res.stderr
    assert calls.read_text().splitlines() == [
        "update -qq",
        "install -y -qq --no-install-recommends chromium fonts-liberation",
    ]


def test_the_real_kernel_vm_needs_qemu_and_only_it_does(bin_dir: Path) -> None:
    tools = ("dockerd", "debootstrap", "ssh", "make", "python3")
    res = run(bin_dir, "--check", "--compliance", docker_up=True, uid=0, have=tools)
    assert res.returncode == 1
    assert "install them with: apt-get install -y --no-install-recommends qemu-system-x86 qemu-utils" in res.stderr
    have = (*tools, "qemu-system-x86_64")
    assert run(bin_dir, "--check", "--compliance", docker_up=True, uid=0, have=have).returncode == 0
