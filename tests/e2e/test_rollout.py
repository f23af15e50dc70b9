"""Model rollout on the lab (issue: model rollout). Tests run in file order and build on each other:
site.yml converges v1, then v2 rolls out under load, v3-bad is stopped at the canary, bad input is
refused in preflight, and rollback.yml goes back on demand."""

from __future__ import annotations

import csv
import io
import json
import shlex
import shutil
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import HTTPServer, SimpleHTTPRequestHandler
from pathlib import Path

import pytest
from labkit import BIN, LAB_STATE, ROOT, Lab, mitogen_env, playbook, recap, run, wait_for
from loadgen import Client

LB = "172.28.10.10"
REGISTRY = "172.28.10.30:5000"
INFER_URL = f"http://{LB}:8000/v2/models/iris/infer"
INFERENCE = ["cpu-1", "cpu-2", "gpu-1", "gpu-2"]
# The LB servers of iris: one per replica; the CPU hosts run two (inventories/lab/group_vars/cpu_inference).
SERVERS = [*INFERENCE, "cpu-1-1", "cpu-2-1"]
LEDGER = ROOT / "artifacts" / "ledger" / "deployments.jsonl"


def running(lab: Lab) -> dict[str, dict[str, str]]:
    """Per inference host: the model container's version label and container id."""
    out = lab.ansible("inference", "ansible.builtin.command", "docker inspect model-iris", become=True)
    info = {h: json.loads(r["stdout"])[0] for h, r in out.items()}
    return {h: {"version": i["Config"]["Labels"]["io.mlfleet.model.version"], "id": i["Id"]} for h, i in info.items()}


def replicas(lab: Lab) -> dict[tuple[str, str], dict[str, str]]:
    """Per (host, container) of iris: its version label, device label and container id."""
    cmd = "docker inspect $(docker ps -aq --filter label=io.mlfleet.model=iris)"
    out = lab.ansible("inference", "ansible.builtin.shell", cmd, become=True)
    return {
        (h, c["Name"].lstrip("/")): {
            "version": c["Config"]["Labels"]["io.mlfleet.model.version"],
            "device": c["Config"]["Labels"].get("io.mlfleet.model.device", ""),
            "id": c["Id"],
        }
        for h, r in out.items()
        for c in json.loads(r["stdout"])
    }


def lb_servers() -> dict[str, str]:
    """HAProxy's view of the iris backend: server -> status (UP, DOWN, MAINT, DRAIN)."""
    with urllib.request.urlopen(f"http://{LB}:8404/stats;csv", timeout=10) as resp:
        rows = csv.DictReader(io.StringIO(resp.read().decode().lstrip("# ")))
        servers = [r for r in rows if r["pxname"] == "iris" and r["svname"] not in ("FRONTEND", "BACKEND")]
    return {r["svname"]: r["status"] for r in servers}


class LbWatch:
    """Samples HAProxy's iris backend in the background: the most servers seen out of rotation at once."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.most_out = 0
        self.seen_out: set[str] = set()
        self.out_sets: set[frozenset[str]] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = {s for s, status in lb_servers().items() if not status.startswith("UP")}
            except OSError:
                out = None
            if out is not None:
                self.samples += 1
                self.most_out = max(self.most_out, len(out))
                self.seen_out |= out
                self.out_sets.add(frozenset(out))
            self._stop.wait(self.interval)

    def __enter__(self) -> LbWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def ledger_since(offset: int) -> list[dict]:
    return [json.loads(line) for line in LEDGER.read_text().splitlines()[offset:]] if LEDGER.exists() else []


def ledger_len() -> int:
    return len(LEDGER.read_text().splitlines()) if LEDGER.exists() else 0


def test_site_deploys_v1_everywhere_and_the_lb_answers_correctly(lab: Lab, converged: str) -> None:
    assert {h: r["version"] for h, r in running(lab).items()} == dict.fromkeys(INFERENCE, "v1")
    assert lb_servers() == dict.fromkeys(SERVERS, "UP")
    client = Client(INFER_URL)
    for _ in range(40):
        client.request_once()
    assert client.outcomes == {"ok": 40}, client.errors


def registry_digest(repository: str, tag: str) -> str:
    """The digest the lab registry serves for repository:tag (HEAD of the manifest, lab CA)."""
    ctx = ssl.create_default_context(cafile=str(LAB_STATE / "pki" / "ca.crt"))
    req = urllib.request.Request(
        f"https://{REGISTRY}/v2/{repository}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
        return resp.headers["Docker-Content-Digest"]


def test_every_replica_runs_hardened_and_pinned_to_the_registry_digest_of_its_version(lab: Lab, converged: str) -> None:
    cmd = "docker inspect $(docker ps -q --filter label=io.mlfleet.model=iris)"
    out = lab.ansible("inference", "ansible.builtin.shell", cmd, become=True)
    containers = [c for r in out.values() for c in json.loads(r["stdout"])]
    assert len(containers) == len(SERVERS)
    digests = {
        v: registry_digest("iris", v) for v in {c["Config"]["Labels"]["io.mlfleet.model.version"] for c in containers}
    }
    for c in containers:
        version = c["Config"]["Labels"]["io.mlfleet.model.version"]
        assert c["Config"]["Image"] == f"{REGISTRY}/iris@{digests[version]}", c["Name"]
        assert c["HostConfig"]["ReadonlyRootfs"] is True, c["Name"]
        assert c["HostConfig"]["CapDrop"] == ["ALL"], c["Name"]
        assert "no-new-privileges:true" in c["HostConfig"]["SecurityOpt"], c["Name"]
        assert c["Config"]["User"] == "10001:10001", c["Name"]


def test_the_model_port_answers_only_the_lb_and_monitoring(lab: Lab, converged: str) -> None:
    probe = "import urllib.request;print(urllib.request.urlopen('http://cpu-1:8080/v2/health/ready', timeout=5).status)"
    assert lab.sh("lb-1", f"python3 -c {json.dumps(probe)}").stdout.strip() == "200"
    assert lab.sh("obs-1", f"python3 -c {json.dumps(probe)}").stdout.strip() == "200"
    refused = lab.sh("gpu-1", f"python3 -c {json.dumps(probe)}", check=False)
    assert refused.returncode != 0 and "timed out" in refused.stderr
    with pytest.raises(OSError):
        socket.create_connection((lab.hosts["cpu-1"], 8080), timeout=5)


def test_a_published_port_that_no_rule_names_is_refused_from_another_host(lab: Lab, converged: str) -> None:
    """Docker alone opens every published port to everyone; the hardening firewall closes the ones
    no rule names (a stray container here), while the host itself still reaches it."""
    # The image the model runs, by its ID (replicas run by digest, so there is no tag to name).
    image = lab.sh("cpu-1", "docker inspect --format '{{.Image}}' model-iris", become=True).stdout.strip()
    assert image, "no model container runs on cpu-1"
    lab.sh(
        "cpu-1",
        f"docker run -d --rm --name mlfleet-stray -p 18090:9000 --entrypoint python3 {image} -m http.server 9000",
        become=True,
    )
    try:
        probe = "import urllib.request;print(urllib.request.urlopen('http://{}:18090/', timeout=5).status)"
        local = f"python3 -c {json.dumps(probe.format('172.28.10.21'))}"
        deadline = time.monotonic() + 30
        while lab.sh("cpu-1", local, check=False).stdout.strip() != "200":
            assert time.monotonic() < deadline, "the stray container never answered on its own host"
            time.sleep(1)
        refused = lab.sh("cpu-2", f"python3 -c {json.dumps(probe.format('cpu-1'))}", check=False)
        assert refused.returncode != 0 and "timed out" in refused.stderr, refused
        with pytest.raises(OSError):
            socket.create_connection((lab.hosts["cpu-1"], 18090), timeout=5)
    finally:
        lab.sh("cpu-1", "docker rm -f mlfleet-stray", become=True, check=False)


def test_ssh_answers_only_the_control_node(lab: Lab, converged: str) -> None:
    probe = "import socket;socket.create_connection(('cpu-2', 22), timeout=5)"
    refused = lab.sh("cpu-1", f"python3 -c {json.dumps(probe)}", check=False)
    assert refused.returncode != 0 and "timed out" in refused.stderr
    assert lab.sh("cpu-2", "true").returncode == 0


def test_a_second_site_run_changes_nothing(lab: Lab, converged: str) -> None:
    # Under Mitogen, as the first converge (labkit.mitogen_env).
    out = playbook("playbooks/site.yml", "-e", "rollout_version=v1", timeout=3600, env=mitogen_env()).stdout
    counts = recap(out)
    assert {h: c["changed"] for h, c in counts.items()} == dict.fromkeys(counts, 0)


def test_check_mode_prints_the_plan_and_touches_nothing(lab: Lab, converged: str) -> None:
    before = running(lab)
    out = playbook("playbooks/rollout.yml", "--check", "-e", "rollout_model=iris", "-e", "rollout_version=v2").stdout
    # Batches count replicas (6: the CPU hosts run two): the canary is one replica, then half of
    # them, then the rest; a host never has both replicas out at once.
    assert "batch 1: cpu-1 replica 0" in out
    assert "batch 2: cpu-1 replica 1, cpu-2 replicas 0 then 1" in out
    assert "batch 3: gpu-1, gpu-2" in out
    assert "cpu-1: v1 -> v2 (2 replicas)" in out
    assert running(lab) == before
    assert lb_servers() == dict.fromkeys(SERVERS, "UP")


def test_v2_rolls_out_replica_by_replica_with_zero_failed_requests(lab: Lab, converged: str) -> None:
    offset = ledger_len()
    before = replicas(lab)
    with Client(INFER_URL) as client, LbWatch() as watch:
        res = playbook(
            "playbooks/rollout.yml", "-e", "rollout_model=iris", "-e", "rollout_version=v2",
            "-e", '{"rollout_batches": [1]}', check=False,
        )  # fmt: skip
    assert res.returncode == 0, res.stdout[-4000:]
    # Batch 1: never more than one replica out of rotation, and each of them was out once.
    assert watch.samples > 50
    assert watch.most_out == 1
    assert watch.seen_out == set(SERVERS)
    assert client.outcomes["failed"] == 0, client.errors
    assert client.outcomes["wrong"] == 0
    assert client.total > 100
    assert client.versions["v2"] > 0
    assert {h: r["version"] for h, r in running(lab).items()} == dict.fromkeys(INFERENCE, "v2")
    # Every replica, each its own container, on the new version.
    running_replicas = replicas(lab)
    assert sorted(running_replicas) == sorted(
        [(h, "model-iris") for h in INFERENCE] + [("cpu-1", "model-iris-1"), ("cpu-2", "model-iris-1")]
    )
    assert {r["version"] for r in running_replicas.values()} == {"v2"}
    assert {r["device"] for r in running_replicas.values()} == {"CPU (shared)"}
    assert all(running_replicas[k]["id"] != before[k]["id"] for k in running_replicas)
    records = ledger_since(offset)
    assert {(r["result"], r["from_version"], r["version"]) for r in records} == {("deployed", "v1", "v2")}
    assert all(r["digest"].startswith("sha256:") for r in records)
    # One record per replica, each naming its container and device, canary (cpu-1's replica 0) first.
    assert [(r["host"], r["replicas"]) for r in records] == [
        ("cpu-1", [{"container": "model-iris", "device": "CPU (shared)"}]),
        ("cpu-1", [{"container": "model-iris-1", "device": "CPU (shared)"}]),
        ("cpu-2", [{"container": "model-iris", "device": "CPU (shared)"}]),
        ("cpu-2", [{"container": "model-iris-1", "device": "CPU (shared)"}]),
        ("gpu-1", [{"container": "model-iris", "device": "CPU (shared)"}]),
        ("gpu-2", [{"container": "model-iris", "device": "CPU (shared)"}]),
    ]
    deployed = json.loads(lab.sh("cpu-1", "cat /etc/mlfleet/deployed.json").stdout)
    assert deployed["iris"]["version"] == "v2"


def test_a_bad_version_stops_at_the_canary_replica_and_only_it_is_restored(lab: Lab, converged: str) -> None:
    before = running(lab)
    before_replicas = replicas(lab)
    offset = ledger_len()
    with Client(INFER_URL) as client:
        res = playbook("playbooks/rollout.yml", "-e", "rollout_model=iris", "-e", "rollout_version=v3-bad", check=False)
    assert res.returncode != 0
    assert "Rollout of iris v3-bad stopped at cpu-1 replica 0 (gate)" in res.stdout
    assert "cpu-1 is back on v2 and in the load balancer (1 replica restored)" in res.stdout
    assert "check 'infer' failed" in res.stdout
    assert "expected [0] got [1]" in res.stdout
    # The LB kept answering, correctly, the whole time.
    assert client.outcomes["failed"] == 0, client.errors
    assert client.outcomes["wrong"] == 0
    assert set(client.versions) == {"v2"}
    after = running(lab)
    assert after["cpu-1"]["version"] == "v2"
    # Exactly one replica was touched: the canary (cpu-1's replica 0) runs a new container, back on v2;
    # every other replica, cpu-1's second one included, is the very container it was.
    after_replicas = replicas(lab)
    canary = ("cpu-1", "model-iris")
    assert after_replicas[canary]["version"] == "v2"
    assert after_replicas[canary]["id"] != before_replicas[canary]["id"]
    assert {k: r for k, r in after_replicas.items() if k != canary} == {
        k: r for k, r in before_replicas.items() if k != canary
    }
    assert {h: after[h] for h in INFERENCE if h != "cpu-1"} == {h: before[h] for h in INFERENCE if h != "cpu-1"}
    assert [(r["host"], r["result"], [x["container"] for x in r["replicas"]]) for r in ledger_since(offset)] == [
        ("cpu-1", "failed", ["model-iris"]),
        ("cpu-1", "rolled_back", ["model-iris"]),
    ]
    assert lb_servers() == dict.fromkeys(SERVERS, "UP")


def when_the_canary_is(
    state: Callable[[str], bool], action: Callable[[], None]
) -> tuple[threading.Thread, threading.Event]:
    """In the background: run action once HAProxy's status of the canary (cpu-1) satisfies state, and
    set the event it returns (an OSError, e.g. the LB not answering, is retried)."""
    done = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if state(lb_servers().get("cpu-1", "UP")):
                    action()
                    done.set()
                    return
            except OSError:
                pass
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, done


PROMETHEUS = "http://172.28.10.30:9090"
# The control node loses SSH to the load balancer (its management path), while the load balancer
# keeps serving clients: an established connection is reset, a new one refused.
LB_SSH_CUT = ["OUTPUT", "-d", LB, "-p", "tcp", "--dport", "22", "-j", "REJECT", "--reject-with", "tcp-reset"]


def out_of_rotation_alerts() -> set[str]:
    """The servers ModelServerOutOfRotation fires for, in the lab's Prometheus."""
    with urllib.request.urlopen(f"{PROMETHEUS}/api/v1/alerts", timeout=10) as resp:
        alerts = json.loads(resp.read())["data"]["alerts"]
    return {
        a["labels"].get("server", "")
        for a in alerts
        if a["labels"]["alertname"] == "ModelServerOutOfRotation" and a["state"] == "firing"
    }


def test_a_load_balancer_cut_off_mid_step_leaves_an_alert_and_the_next_run_heals(lab: Lab, converged: str) -> None:
    """Fault (a): the control node loses the load balancer once the canary is out of rotation. The
    rescue still puts the canary back on what it ran, gated; it stays out of rotation (the LB cannot
    be told), the run stops naming the load balancer, the replica and what to do, the ledger says
    left_out, and ModelServerOutOfRotation names it. With the LB back, the next run puts it back."""
    before = replicas(lab)
    assert {r["version"] for r in before.values()} == {"v2"}  # after the bad version above
    offset = ledger_len()

    def cut_ssh_to_the_lb() -> None:
        # Past the drain's own wait (it polls each second): the canary is being replaced.
        time.sleep(1.5)
        run(["iptables", "-I", *LB_SSH_CUT], check=True)

    cutter, cut = when_the_canary_is(lambda status: status.startswith("MAINT"), cut_ssh_to_the_lb)
    try:
        with Client(INFER_URL) as client:
            res = playbook("playbooks/rollout.yml", "-e", "rollout_model=iris", "-e", "rollout_version=v1", check=False)
            # The load balancer still serves, without the canary; Prometheus (not cut off) sees it out.
            assert wait_for(lambda: "cpu-1" in out_of_rotation_alerts(), 90), "ModelServerOutOfRotation never fired"
    finally:
        cutter.join(timeout=5)
        if cut.is_set():
            run(["iptables", "-D", *LB_SSH_CUT], check=True)
    assert cut.is_set(), "the canary never went to MAINT"
    assert res.returncode != 0
    out = " ".join(res.stdout.split())
    assert "Rollout of iris v1 stopped at cpu-1 replica 0 (enable)" in out, out[-4000:]
    assert "The load balancer lb-1 could not be reached to enable cpu-1 of backend iris" in out
    assert "cpu-1 is back on v2 (1 replica(s) restored), but the load balancer lb-1 could not be reached" in out
    assert "replica(s) 0 (cpu-1) stay out of rotation there (ModelServerOutOfRotation names them)" in out
    assert "Once lb-1 answers, run the rollout of iris again" in out
    assert client.outcomes["failed"] == 0, client.errors
    assert set(client.versions) == {"v2"}
    canary = ("cpu-1", "model-iris")
    after = replicas(lab)
    assert after[canary]["version"] == "v2" and after[canary]["id"] != before[canary]["id"]
    assert {k: r for k, r in after.items() if k != canary} == {k: r for k, r in before.items() if k != canary}
    records = ledger_since(offset)
    assert [(r["host"], r["result"], r["version"], [x["container"] for x in r["replicas"]]) for r in records] == [
        ("cpu-1", "failed", "v1", ["model-iris"]),
        ("cpu-1", "rolled_back", "v2", ["model-iris"]),
        ("cpu-1", "left_out", "v2", ["model-iris"]),
    ]
    assert lb_servers()["cpu-1"].startswith("MAINT")

    # The load balancer answers again: the next run (the version that serves, so nothing is
    # redeployed) takes over the dead run's lock, gates the canary and puts it back.
    offset = ledger_len()
    with Client(INFER_URL) as client:
        res = playbook("playbooks/rollout.yml", "-e", "rollout_model=iris", "-e", "rollout_version=v2", check=False)
    assert res.returncode == 0, res.stdout[-4000:]
    assert client.outcomes["failed"] == 0, client.errors
    assert lb_servers() == dict.fromkeys(SERVERS, "UP")
    assert [(r["host"], r["result"], [x["container"] for x in r["replicas"]]) for r in ledger_since(offset)] == [
        ("cpu-1", "returned", ["model-iris"])
    ]
    assert replicas(lab) == after
    assert wait_for(lambda: "cpu-1" not in out_of_rotation_alerts(), 60)


def _refused_in_preflight(lab: Lab, *extra: str) -> str:
    before = running(lab)
    offset = ledger_len()
    res = playbook("playbooks/rollout.yml", "-e", "rollout_model=iris", *extra, check=False)
    assert res.returncode != 0
    assert "Roll out host by host" not in res.stdout  # the rollout play never started
    assert running(lab) == before
    assert lb_servers() == dict.fromkeys(SERVERS, "UP")
    assert ledger_since(offset) == []
    return res.stdout


def test_a_tag_missing_from_the_registry_is_refused_in_preflight(lab: Lab, converged: str) -> None:
    out = _refused_in_preflight(lab, "-e", "rollout_version=v9")
    assert "iris:v9 is not in the registry (HTTP 404" in out


def test_a_port_already_taken_is_refused_in_preflight(lab: Lab, converged: str) -> None:
    # A transient service, so the listener outlives the SSH session that starts it.
    lab.sh("cpu-2", "systemd-run --unit mlfleet-e2e-squatter python3 -m http.server 8090", become=True)
    try:
        lab.sh("cpu-2", "for i in $(seq 20); do ss -ltn | grep -q ':8090 ' && exit 0; sleep 0.5; done; exit 1")
        out = _refused_in_preflight(lab, "-e", "rollout_version=v2", "-e", "model_server_port=8090")
        assert "On cpu-2, port 8090 is used by process python3" in out
    finally:
        lab.sh("cpu-2", "systemctl stop mlfleet-e2e-squatter || true", become=True)


FAKE_SMI = ROOT / "molecule" / "nvidia_gpu" / "files" / "nvidia-smi"
SMI_FIXTURES = ROOT / "tests" / "unit" / "fixtures" / "nvidia_smi"


@pytest.fixture()
def gpu2_with_recorded_gpus(lab: Lab) -> Iterator[None]:
    """gpu-2 answers accelerator_facts as a 2 x A100 host with GPU 0 in MIG mode (3g.20gb, 2g.10gb,
    1g.5gb, 1g.5gb): recorded nvidia-smi output behind the Molecule scenario's fake nvidia-smi."""
    fake = "/usr/local/share/fake-nvidia-smi"
    files = {"mig_enabled.csv": "query-gpu.csv", "version_550.txt": "version.txt", "list_mig.txt": "list.txt"}
    lab.ansible("gpu-2", "ansible.builtin.file", f"path={fake} state=directory mode=0755", become=True)
    for src, dest in files.items():
        lab.ansible(
            "gpu-2", "ansible.builtin.copy", f"src={SMI_FIXTURES / src} dest={fake}/{dest} mode=0644", become=True
        )
    lab.ansible(
        "gpu-2", "ansible.builtin.copy", f"src={FAKE_SMI} dest=/usr/local/bin/nvidia-smi mode=0755", become=True
    )
    try:
        yield
    finally:
        lab.sh("gpu-2", f"rm -rf /usr/local/bin/nvidia-smi {fake}", become=True)


# Each placement that does not fit gpu-2 (recorded facts) or the CPU hosts, refused before any drain
# with a message naming host, model and device. The metrics move to 8090 so three replicas' ports fit.
PLACEMENT_REFUSALS = {
    "too many GPUs": (
        ["model_server_gpus=1", "model_server_replicas=3", "model_server_metrics_port=8090"],
        "gpu-2: deployment iris asks for 3 GPU(s) (3 replica(s) x 1), but 1 of the host's 1 whole GPU(s) are free",
    ),
    "an unknown MIG profile": (
        ["model_server_mig_profile=7g.80gb"],
        "gpu-2: deployment iris asks for MIG profile '7g.80gb', which no GPU of the host offers: its MIG devices "
        "are 1g.5gb, 2g.10gb, 3g.20gb",
    ),
    "a device used twice": (
        ['{"model_server_cpusets": ["0", "0"]}'],
        "cpu-1: CPU 0 is used twice: by iris-0 and by iris-1",
    ),
    "replica ports that collide": (
        ["model_server_replicas=3"],
        "iris would publish host port 8082 twice (the API port of replica 2 and the metrics port of replica 0)",
    ),
}


@pytest.mark.parametrize("case", sorted(PLACEMENT_REFUSALS))
def test_a_placement_that_does_not_fit_is_refused_in_preflight(
    lab: Lab, converged: str, gpu2_with_recorded_gpus: None, case: str
) -> None:
    extra, message = PLACEMENT_REFUSALS[case]
    out = _refused_in_preflight(lab, "-e", "rollout_version=v2", *(arg for e in extra for arg in ("-e", e)))
    assert message in out, out[-4000:]


def test_an_unknown_engine_is_refused_before_any_change(lab: Lab, converged: str) -> None:
    out = _refused_in_preflight(lab, "-e", "rollout_version=v2", "-e", "model_server_engine=torchserve")
    assert "model_server_engine" in out
    assert "torchserve" in out


def test_a_version_that_is_no_image_tag_and_a_root_user_are_refused_before_any_change(lab: Lab, converged: str) -> None:
    out = _refused_in_preflight(
        lab, "-e", json.dumps({"rollout_version": "v2 bad/../:tag", "model_server_user": "0:0"})
    )
    assert "model_server_version 'v2 bad/../:tag' is not an image tag" in out
    assert "model_server_user runs the container as root" in out
    assert "model_server_security_waivers: [root_user]" in out


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_a_wrong_artifact_checksum_is_refused_in_preflight(lab: Lab, converged: str, tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not really a model\n")
    # Served on the lab network's gateway (this control node), reachable from the lab hosts only.
    server = HTTPServer(("172.28.10.1", 0), lambda *a: _Quiet(*a, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://172.28.10.1:{server.server_port}/model.onnx"
        artifacts = json.dumps({"model_server_artifacts": [{"url": url, "sha256": "0" * 64}]})
        out = _refused_in_preflight(lab, "-e", "rollout_version=v2", "-e", artifacts)
        assert "did not match sha256 " + "0" * 64 in out
    finally:
        server.shutdown()


def lb_admin(lab: Lab, command: str) -> str:
    """One command on lb-1's HAProxy runtime API (its admin socket), as a killed run would have left it."""
    script = (
        "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock'); "
        "s.sendall(sys.argv[1].encode() + b'\\n'); print(s.recv(65536).decode())"
    )
    return lab.sh("lb-1", f"python3 -c {shlex.quote(script)} {shlex.quote(command)}", become=True).stdout


LOCK = "/var/lib/mlfleet/fleet.lock"


def test_a_ledger_that_cannot_take_records_is_refused_in_preflight(lab: Lab, converged: str, tmp_path: Path) -> None:
    folder = tmp_path / "deployments.jsonl"
    folder.mkdir()
    out = _refused_in_preflight(lab, "-e", "rollout_version=v1", "-e", f"rollout_ledger_file={folder}")
    assert f"The ledger {folder} cannot take records (it is a folder)" in out


def test_a_run_killed_on_another_control_node_blocks_changes_until_its_lock_is_broken_then_is_healed(
    lab: Lab, converged: str
) -> None:
    # The runs refused above failed after taking the fleet lock: their lock is still there, and each
    # next run of this control node took it over (their process had ended).
    left = json.loads(lab.sh("lb-1", f"cat {LOCK}", become=True).stdout)
    assert left["run_id"].startswith(f"{socket.gethostname()}:") and left["owner"].endswith(": rollout.yml")
    # A run on another control node was killed between drain and enable: cpu-2's second replica stays
    # in MAINT (its container runs v2), and its lock stays, valid for 10 more minutes.
    foreign = {"run_id": "ctl-9:4242:777", "owner": "alice@ctl-9: rollout.yml", "since": "2026-12-05T10:00:00Z"}
    foreign |= {"expires": "in 10 minutes", "expires_ts": time.time() + 600}
    lab.sh("lb-1", f"echo {shlex.quote(json.dumps(foreign))} > {LOCK}", become=True)
    lb_admin(lab, "disable server iris/cpu-2-1")
    assert lb_servers()["cpu-2-1"] == "MAINT"
    before, offset = replicas(lab), ledger_len()

    res = playbook("playbooks/rollout.yml", "-e", "rollout_model=iris", "-e", "rollout_version=v2", check=False)
    assert res.returncode != 0
    assert "The fleet is locked by another run: alice@ctl-9: rollout.yml (run ctl-9:4242:777" in res.stdout
    assert "-e preflight_lock_break=ctl-9:4242:777" in res.stdout
    assert "Choose the hosts of this rollout" not in res.stdout  # stopped before any rollout play
    assert lb_servers()["cpu-2-1"] == "MAINT" and ledger_since(offset) == []

    res = playbook(
        "playbooks/rollout.yml", "-e", "rollout_model=iris", "-e", "rollout_version=v2",
        "-e", "preflight_lock_break=ctl-9:4242:777", check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-4000:]
    assert "Took over the fleet lock of run ctl-9:4242:777" in res.stdout + res.stderr
    assert lb_servers() == dict.fromkeys(SERVERS, "UP")
    assert replicas(lab) == before  # no container changed: the replica was gated and put back
    records = ledger_since(offset)
    assert [(r["host"], r["result"], r["version"], [x["container"] for x in r["replicas"]]) for r in records] == [
        ("cpu-2", "returned", "v2", ["model-iris-1"])
    ]
    assert records[0]["failure"] is None
    # The run gave its lock back.
    assert lab.sh("lb-1", f"test -e {LOCK}", become=True, check=False).returncode == 1


def test_a_rollback_with_no_recorded_previous_version_is_refused_before_any_drain(lab: Lab, converged: str) -> None:
    # gpu-2 as a host that never had an earlier version: its record of the previous one is set aside.
    previous = "/etc/mlfleet/models/iris/previous.json"
    lab.sh("gpu-2", f"mv {previous} {previous}.e2e", become=True)
    try:
        before = replicas(lab)
        offset = ledger_len()
        with LbWatch() as watch:
            res = playbook("playbooks/rollback.yml", "-e", "rollout_model=iris", check=False)
        assert res.returncode != 0
        out = " ".join(res.stdout.split())
        assert "No previous version of iris is recorded on gpu-2: nothing to roll back to." in out, out[-3000:]
        assert "No host was drained." in out
        assert "Roll back host by host" not in res.stdout  # the rollback play never started
        assert watch.samples > 0 and watch.seen_out == set()
        assert replicas(lab) == before
        assert ledger_since(offset) == []
    finally:
        lab.sh("gpu-2", f"mv {previous}.e2e {previous}", become=True)


def test_rollback_goes_back_to_the_previous_version(lab: Lab, converged: str) -> None:
    offset = ledger_len()
    with Client(INFER_URL) as client, LbWatch() as watch:
        res = playbook("playbooks/rollback.yml", "-e", "rollout_model=iris", check=False)
    assert res.returncode == 0, res.stdout[-4000:]
    assert client.outcomes["failed"] == 0, client.errors
    assert {h: r["version"] for h, r in running(lab).items()} == dict.fromkeys(INFERENCE, "v1")
    assert {r["version"] for r in replicas(lab).values()} == {"v1"}
    # The default batches ([1, "50%", "100%"]) with at most half of a host's replicas out at once:
    # the CPU hosts never had both replicas out of rotation together.
    assert watch.seen_out == set(SERVERS)
    for host in ("cpu-1", "cpu-2"):
        assert not any({host, f"{host}-1"} <= out for out in watch.out_sets), watch.out_sets
    records = ledger_since(offset)
    assert {(r["action"], r["result"], r["version"]) for r in records} == {("rollback", "deployed", "v1")}
    assert sorted(x["container"] for r in records if r["host"] == "cpu-2" for x in r["replicas"]) == [
        "model-iris",
        "model-iris-1",
    ]


def test_a_ledger_that_fails_mid_run_strands_no_host_and_the_next_run_finishes(
    lab: Lab, converged: str, tmp_path: Path
) -> None:
    """Fault (d): the ledger stops taking records after preflight (it becomes a folder while the canary
    is out of rotation). The canary is still gated and put back; the run stops there with the record in
    its message; the next run, with the ledger back, finishes the rollout."""
    before = replicas(lab)
    assert {r["version"] for r in before.values()} == {"v1"}  # after the rollback above
    saved, offset = tmp_path / "ledger.saved", ledger_len()
    shutil.copy(LEDGER, saved)

    def break_the_ledger() -> None:
        LEDGER.unlink()
        LEDGER.mkdir()

    breaker, broken = when_the_canary_is(lambda status: not status.startswith("UP"), break_the_ledger)
    try:
        with Client(INFER_URL) as client:
            res = playbook("playbooks/rollout.yml", "-e", "rollout_model=iris", "-e", "rollout_version=v2", check=False)
    finally:
        breaker.join(timeout=5)
        if LEDGER.is_dir():
            LEDGER.rmdir()
            shutil.copy(saved, LEDGER)
    assert broken.is_set()
    assert res.returncode != 0
    assert f"cpu-1 is serving, every replica in the load balancer, but the ledger {LEDGER}" in res.stdout
    assert "could not take its record(s): Could not append to the ledger" in res.stdout
    kept = res.stdout.split("Record: {", 1)[-1]  # the record, kept in the message (YAML may escape its quotes)
    assert "Record: {" in res.stdout and "deployed" in kept and "model-iris" in kept
    assert client.outcomes["failed"] == 0, client.errors
    assert lb_servers() == dict.fromkeys(SERVERS, "UP")
    # Only the canary replica changed; no later batch started.
    after = replicas(lab)
    canary = ("cpu-1", "model-iris")
    assert after[canary]["version"] == "v2"
    assert {k: r for k, r in after.items() if k != canary} == {k: r for k, r in before.items() if k != canary}
    assert ledger_since(offset) == []

    res = playbook("playbooks/rollout.yml", "-e", "rollout_model=iris", "-e", "rollout_version=v2", check=False)
    assert res.returncode == 0, res.stdout[-4000:]
    assert {r["version"] for r in replicas(lab).values()} == {"v2"}
    assert lb_servers() == dict.fromkeys(SERVERS, "UP")
    records = ledger_since(offset)
    assert {(r["result"], r["version"]) for r in records} == {("deployed", "v2")}
    assert {r["host"] for r in records} == set(INFERENCE)


PROMETHEUS = "http://172.28.10.30:9090"
REPORT_ARTIFACTS = ROOT / "artifacts" / "e2e"


def prometheus_at(expr: str, at: float) -> dict[tuple[str, str], float]:
    query = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
    with urllib.request.urlopen(f"{PROMETHEUS}/api/v1/query?{query}", timeout=10) as resp:
        result = json.loads(resp.read())["data"]["result"]
    return {(s["metric"]["model"], s["metric"]["version"]): float(s["value"][1]) for s in result}


def test_the_fleet_report_shows_in_a_browser_what_the_ledger_docker_and_prometheus_say(
    lab: Lab, converged: str
) -> None:
    """Issue 18 part 4: `mlfleet report` after the rollouts above, opened in headless Chromium."""
    from playwright.sync_api import sync_playwright

    from mlfleet import report

    page_file = REPORT_ARTIFACTS / "fleet-report.html"
    res = run([str(BIN / "mlfleet"), "report", "--prometheus", PROMETHEUS, "--range", "6h", "--out", str(page_file)])
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(page_file)
    numbers = json.loads(page_file.with_suffix(".json").read_text())
    end = datetime.strptime(numbers["end"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)

    console: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on(
            "console",
            lambda msg: console.append(f"{msg.type}: {msg.text}") if msg.type in ("error", "warning") else None,
        )
        page.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
        page.goto(page_file.as_uri())
        page.screenshot(path=str(REPORT_ARTIFACTS / "fleet-report.png"), full_page=True)

        def rows(table: str) -> list[list[str]]:
            return page.eval_on_selector_all(
                f"#{table} tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))"
            )

        tiles = dict(
            page.eval_on_selector_all(
                "#summary .tile", "ts => ts.map(t => [t.dataset.key, t.querySelector('dd').innerText])"
            )
        )
        shown_replicas, shown_versions, shown_events = rows("replicas"), rows("versions"), rows("events")
        charts = {c: page.locator(f"#chart-{c} svg").count() for c in ("timeline", "requests_per_s", "latency_p99_s")}
        problems = page.locator("#problems").count()
        browser.close()
    assert console == [] and problems == 0

    # What runs where: every replica docker runs, on the version its last ledger record names, which
    # Prometheus sees running and answering.
    running_now = {k: r["version"] for k, r in replicas(lab).items()}
    assert {(r[0], r[2]): (r[4], r[5], r[6]) for r in shown_replicas} == {
        k: (v, v, "yes") for k, v in running_now.items()
    }
    assert tiles["replicas"] == str(len(running_now)) and tiles["hosts"] == str(len(INFERENCE))
    # The rollout timeline: the ledger's records of the range, newest first, and its failures counted.
    records = [json.loads(line) for line in LEDGER.read_text().splitlines()]
    in_range = [r for r in records if r["when"] >= numbers["start"]]
    assert tiles["ledger_records_in_range"] == str(len(in_range))
    assert tiles["failures_in_range"] == str(sum(r["result"] in ("failed", "left_out") for r in in_range))
    assert [row[:6] for row in shown_events] == [
        [r["when"], r["host"], r["model"], r["action"], r["result"], r["version"]] for r in reversed(in_range[-50:])
    ]
    # Per version: the replicas Prometheus counts now, and the requests each version served in the
    # range (the rollouts above ran under load), as Prometheus answers at the report's end time.
    start = datetime.strptime(numbers["start"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    query = report.totals_queries(end - start)
    served = prometheus_at(query["requests"], end.timestamp())
    table = {(r[0], r[1]): (int(r[2]), int(r[3])) for r in shown_versions}
    assert {k: n for k, (n, _) in table.items() if n} == {
        ("iris", v): n for v, n in Counter(running_now.values()).items()
    }
    assert {k: n for k, (_, n) in table.items()} == {k: round(v) for k, v in served.items()}
    # Both versions served in the range, each its own requests: v1 before the v2 rollout, v2 after.
    assert table[("iris", "v1")][1] > 0 and table[("iris", "v2")][1] > 0
    assert charts == {"timeline": 1, "requests_per_s": 1, "latency_p99_s": 1}
