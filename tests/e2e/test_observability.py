"""Metrics and alerts wired end to end on the lab (issue: observability)."""

from __future__ import annotations

import json
import re
import sys
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import yaml
from labkit import Lab, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import dashboards  # noqa: E402

PROMETHEUS = "http://172.28.10.30:9090"
INFERENCE = ["cpu-1", "cpu-2", "gpu-1", "gpu-2"]
ALL_HOSTS = ["cpu-1", "cpu-2", "gpu-1", "gpu-2", "lb-1", "obs-1"]


def api(path: str) -> dict:
    with urllib.request.urlopen(f"{PROMETHEUS}{path}", timeout=10) as resp:
        return json.loads(resp.read())["data"]


def target_health() -> dict[tuple[str, str, str], str]:
    targets = api("/api/v1/targets")["activeTargets"]
    return {
        (t["labels"]["job"], t["labels"].get("host", ""), t["labels"].get("container", "")): t["health"]
        for t in targets
    }


def test_prometheus_scrapes_every_expected_target(lab: Lab, converged: str) -> None:
    # One model target per replica: the CPU hosts run two (inventories/lab/group_vars/cpu_inference).
    expected = {("node", h, "") for h in ALL_HOSTS} | {("model", h, "model-iris") for h in INFERENCE}
    expected |= {("model", h, "model-iris-1") for h in ("cpu-1", "cpu-2")}
    expected |= {("haproxy", "lb-1", ""), ("prometheus", "obs-1", "")}

    def all_up() -> bool:
        health = target_health()
        return all(health.get(k) == "up" for k in expected)

    wait_for(all_up, 90)
    health = target_health()
    assert {k: health.get(k) for k in expected} == dict.fromkeys(expected, "up")


def test_each_running_replica_is_described_with_its_version_and_placement(lab: Lab, converged: str) -> None:
    """mlfleet_replica_info (node-exporter's textfile, written by model_server) matches what docker runs."""
    fmt = '{{.Names}}|{{.Label "io.mlfleet.model.version"}}|{{.Label "io.mlfleet.model.device"}}'
    running = {}
    for host in INFERENCE:
        out = lab.sh(host, f"docker ps --filter label=io.mlfleet.model --format '{fmt}'", become=True).stdout
        for line in out.splitlines():
            name, version, device = line.split("|")
            running[(host, name)] = (version, device)
    assert len(running) == 6  # two replicas on each CPU host, one on each GPU host

    def described() -> dict:
        result = api("/api/v1/query?query=mlfleet_replica_info")["result"]
        return {
            (s["metric"]["host"], s["metric"]["container"]): (s["metric"]["version"], s["metric"]["placement"])
            for s in result
        }

    assert wait_for(lambda: described() == running, 60), (described(), running)
    assert all(placement for _version, placement in running.values())


# The dashboards the grafana_dashboards role provisions on obs-1. The lab has the series of the fleet
# and serving ones; the GPU (DCGM) and drift (a control host's textfile) dashboards are evaluated on
# exporter-shaped series in tests/unit/test_dashboards.py: the lab has no GPU, and its drift runs
# write their textfile on the control node, which Prometheus does not scrape.
DASHBOARDS = "/var/lib/grafana/dashboards/mlfleet"
LAB_DASHBOARDS = ["mlfleet-fleet", "mlfleet-serving"]


def grafana_query(expr: str) -> list:
    """A panel query as Grafana sends it with every variable on "All" and a 1m rate interval."""
    sent = dashboards.as_sent(expr)
    with urllib.request.urlopen(f"{PROMETHEUS}/api/v1/query?{urllib.parse.urlencode({'query': sent})}") as r:
        body = json.loads(r.read())
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def test_every_panel_of_the_provisioned_dashboards_returns_data(lab: Lab, converged: str) -> None:
    files = sorted(lab.sh("obs-1", f"ls {DASHBOARDS}").stdout.split())
    assert files == ["mlfleet-drift.json", "mlfleet-fleet.json", "mlfleet-gpu.json", "mlfleet-serving.json"]
    # The provisioned datasource points at a Prometheus that answers from the monitoring host.
    datasources = yaml.safe_load(lab.sh("obs-1", "cat /etc/grafana/provisioning/datasources/mlfleet.yaml").stdout)
    (source,) = datasources["datasources"]
    assert source["uid"] == "mlfleet-prometheus"
    probe = f"import urllib.request;print(urllib.request.urlopen('{source['url']}/-/ready').status)"
    assert lab.sh("obs-1", f"python3 -c {json.dumps(probe)}").stdout.strip() == "200"

    def empty_panels() -> list[tuple[str, str, str]]:
        empty = []
        for name in LAB_DASHBOARDS:
            board = json.loads(lab.sh("obs-1", f"cat {DASHBOARDS}/{name}.json").stdout)
            for panel in board["panels"]:
                empty += [(name, panel["title"], t["refId"]) for t in panel["targets"] if not grafana_query(t["expr"])]
            for variable in board.get("templating", {}).get("list", []):
                if not grafana_query(variable["query"].removeprefix("label_values(").split(",")[0]):
                    empty.append((name, f"variable {variable['name']}", ""))
        return empty

    # Rates need two scrapes of a replica started by the converge.
    assert wait_for(lambda: empty_panels() == [], 60), empty_panels()


def test_every_alert_rule_is_loaded(lab: Lab, converged: str) -> None:
    names = {r["name"] for g in api("/api/v1/rules")["groups"] for r in g["rules"] if r["type"] == "alerting"}
    assert {
        "HostDown",
        "ModelServerDown",
        "ModelNotReady",
        "ModelServerOutOfRotation",
        "HighErrorRatio",
        "ModelLatencyP99High",
        "DiskFilling",
        "GPUTemperatureHigh",
        "GPUXidErrors",
        "ConfigDriftDetected",
        "DriftRunFailed",
        "DriftRunStale",
        "ComplianceScoreBelowGate",
        "ComplianceScoreDropped",
    } <= names


def test_a_stopped_model_container_fires_model_server_down(lab: Lab, converged: str) -> None:
    def firing() -> bool:
        alerts = api("/api/v1/alerts")["alerts"]
        return any(
            (a["labels"]["alertname"], a["labels"].get("host"), a["state"]) == ("ModelServerDown", "gpu-2", "firing")
            for a in alerts
        )

    # A fresh converge brings Prometheus up before the rollout deploys the models, so
    # ModelServerDown may still be firing for a few evaluation intervals after it.
    assert wait_for(lambda: not firing(), 60), "ModelServerDown was firing on gpu-2 before the test stopped anything"
    lab.sh("gpu-2", "docker stop model-iris", become=True)
    try:
        # for: 15s in the lab inventory, 5 s scrapes and evaluations.
        assert wait_for(firing, 90), api("/api/v1/alerts")
    finally:
        lab.sh("gpu-2", "docker start model-iris", become=True)
    # The fleet is whole again before the next test: the alert clears once the server answers.
    assert wait_for(lambda: not firing(), 120)


def remote_log(lab: Lab, host: str, program: str) -> str:
    res = lab.sh("obs-1", f"cat /var/log/remote/{host}/{program}.log 2>/dev/null || true", become=True)
    return res.stdout


def test_a_line_logged_inside_a_model_container_reaches_the_log_host(lab: Lab, converged: str) -> None:
    marker = f"mlfleet-e2e-{uuid.uuid4().hex}"
    # The model server logs each request it serves (its access log, on the container's stdout);
    # docker's journald driver tags the line model-iris, and the journal is shipped to obs-1.
    probe = f"import urllib.request;urllib.request.urlopen('http://127.0.0.1:8080/v2/health/live?marker={marker}')"
    lab.sh("cpu-1", f"python3 -c {json.dumps(probe)}")
    assert wait_for(lambda: marker in remote_log(lab, "cpu-1", "model-iris"), 60)


def test_no_line_is_lost_while_the_log_host_is_down(lab: Lab, converged: str) -> None:
    tag = f"lossless-{uuid.uuid4().hex[:8]}"
    lab.sh("obs-1", "systemctl stop syslog.socket rsyslog.service", become=True)
    try:
        lab.sh("gpu-1", f'for i in $(seq 1 1000); do logger -t {tag} "line $i"; done')
    finally:
        lab.sh("obs-1", "systemctl start rsyslog.service", become=True)

    def numbers() -> list[int]:
        return [int(m) for m in re.findall(r"line (\d+)$", remote_log(lab, "gpu-1", tag), re.M)]

    wait_for(lambda: len(set(numbers())) >= 1000, 120)
    got = numbers()
    assert sorted(set(got)) == list(range(1, 1001))
    assert len(got) == 1000, f"{len(got) - 1000} duplicated lines"
