"""container_runtime: dockerd runs containers with the managed options, trusts and logs in to the private registry."""

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

IMAGE = "mol-sh:1"
REGISTRY = "registry.mol.test:5000"
PROJECT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def image(host):
    # No registry outside is reachable: a two-file image (dash and the C library) made on the host.
    if host.run("docker image inspect %s", IMAGE).rc != 0:
        cmd = host.run(
            "cd / && tar -ch --transform 's,^usr/bin/dash,bin/sh,' usr/bin/dash lib/x86_64-linux-gnu/libc.so.6 "
            "lib64/ld-linux-x86-64.so.2 | docker import - %s",
            IMAGE,
        )
        assert cmd.rc == 0, cmd.stderr
    return IMAGE


@pytest.fixture(scope="module")
def info(host):
    return json.loads(host.check_output("docker info --format '{{json .}}'"))


def test_dockerd_runs_with_the_managed_options(info):
    assert info["LoggingDriver"] == "journald"
    assert info["LiveRestoreEnabled"] is True
    assert "mol-runc" in info["Runtimes"]
    assert info["RegistryConfig"]["Mirrors"] == ["https://mirror.mol.test:5001/"]


def test_no_registry_is_insecure(info):
    # 127.0.0.0/8 is dockerd's own built-in entry; nothing else may skip TLS verification.
    assert info["RegistryConfig"]["InsecureRegistryCIDRs"] == ["127.0.0.0/8"]
    assert all(index["Secure"] for index in info["RegistryConfig"]["IndexConfigs"].values())


def test_container_output_lands_in_the_journal(host, image):
    name = f"mol-journal-{uuid.uuid4().hex[:8]}"
    run = host.run("docker run --name %s %s /bin/sh -c 'echo hello from %s'", name, image, name)
    assert run.rc == 0, run.stderr
    assert run.stdout.strip() == f"hello from {name}"
    for _ in range(10):
        journal = host.run("journalctl CONTAINER_NAME=%s -o cat", name).stdout
        if journal.strip():
            break
        time.sleep(1)
    assert journal.strip() == f"hello from {name}"
    host.run("docker rm %s", name)


def test_containers_get_no_new_privileges_and_the_default_ulimits(host, image):
    # Shell builtins only: the image has nothing but sh (testinfra quotes the script).
    script = (
        'while read -r k v; do [ "$k" = NoNewPrivs: ] && echo "$v"; done </proc/self/status; '
        + "ulimit -Sn; ulimit -Hn"
    )
    run = host.run("docker run --rm %s /bin/sh -c %s", image, script)
    assert run.rc == 0, run.stderr
    assert run.stdout.split() == ["1", "4096", "8192"]


def test_the_extra_runtime_runs_containers(host, image):
    run = host.run("docker run --rm --runtime mol-runc %s /bin/sh -c 'echo ok'", image)
    assert run.rc == 0, run.stderr
    assert run.stdout.strip() == "ok"


def test_the_registry_ca_is_not_trusted_system_wide(host):
    # So the push below succeeds only through /etc/docker/certs.d.
    res = host.run("python3 -c \"import urllib.request;urllib.request.urlopen('https://%s/v2/')\"", REGISTRY)
    assert res.rc != 0
    assert "CERTIFICATE_VERIFY_FAILED" in res.stderr


def test_docker_pushes_to_the_private_registry_with_the_login(host, image):
    target = f"{REGISTRY}/mol/sh:1"
    assert host.run("docker tag %s %s", image, target).rc == 0
    push = host.run("docker push %s", target)
    assert push.rc == 0, push.stderr


def test_the_registry_refuses_a_push_without_the_login(host, image):
    target = f"{REGISTRY}/mol/sh:anon"
    assert host.run("docker tag %s %s", image, target).rc == 0
    push = host.run("DOCKER_CONFIG=$(mktemp -d) docker push %s", target)
    assert push.rc != 0
    assert "no basic auth credentials" in push.stderr


def test_users_outside_the_docker_group_cannot_use_docker(host):
    # Nobody is added to the docker group by default, not even the deploy user.
    res = host.run("runuser -u deploy -- docker info")
    assert res.rc != 0
    assert "permission denied" in (res.stdout + res.stderr).lower()


def test_docker_is_enabled_and_was_not_restarted_after_the_first_converge(host):
    assert host.service("docker").is_enabled
    recorded = host.file("/root/mol-dockerd-pid").content_string.strip()
    current = host.check_output("systemctl show docker --property=MainPID --value")
    assert recorded not in ("", "0")
    assert current == recorded


def test_a_wrong_input_type_fails_before_any_change(host, tmp_path):
    before = host.check_output("sha256sum /etc/docker/daemon.json; systemctl show docker -p MainPID --value")
    playbook = tmp_path / "bad.yml"
    playbook.write_text(
        "- hosts: all\n  gather_facts: false\n  roles:\n    - role: mlfleet.fleet.container_runtime\n"
        "      container_runtime_registry_ca_certs: registry.mol.test:5000=/tmp/ca.crt\n"
    )
    res = subprocess.run(
        ["ansible-playbook", "-i", f"{host.backend.host},", "-c", "community.docker.docker", str(playbook)],
        cwd=PROJECT,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
        capture_output=True,
        text=True,
        check=False,
    )
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    # The role's first task (argument validation) fails, so nothing ran: ok=0 changed=0.
    assert "Validating arguments against arg spec 'main'" in out
    assert "container_runtime_registry_ca_certs" in out, out
    assert "ok=0    changed=0" in out
    assert host.check_output("sha256sum /etc/docker/daemon.json; systemctl show docker -p MainPID --value") == before
