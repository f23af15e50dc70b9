"""node_monitoring + prometheus + grafana_dashboards: Prometheus on one host scrapes the other host's exporter for real.

The hosts are reached by container name (docker://); the inventory's ansible_host is the address on
the scenario's network that Prometheus scrapes, as in the real inventories.
"""

import json
import time

import pytest
import testinfra

NODE_IP = "172.28.98.10"
ALERTS = {
    "HostDown",
    "DiskFilling",
    "ConfigDriftDetected",
    "DriftRunFailed",
    "DriftRunStale",
    "ComplianceScoreBelowGate",
    "ComplianceScoreDropped",
    "ModelServerDown",
    "ModelNotReady",
    "ModelServerOutOfRotation",
    "HighErrorRatio",
    "ModelLatencyP99High",
    "GPUTemperatureHigh",
    "GPUXidErrors",
}


@pytest.fixture(scope="module")
def node():
    return testinfra.get_host("docker://mol-monitoring-node")


@pytest.fixture(scope="module")
def prom():
    return testinfra.get_host("docker://mol-monitoring-prom")


def get(host, url):
    """GET url from inside host; return (status, body)."""
    res = host.run(
        'python3 -c "import sys,urllib.request,urllib.error\n'
        "try:\n r=urllib.request.urlopen(sys.argv[1],timeout=5);print(r.status);print(r.read().decode())\n"
        'except urllib.error.HTTPError as e:\n print(e.code)"'
        " %s",
        url,
    )
    assert res.rc == 0, res.stderr
    status, _, body = res.stdout.partition("\n")
    return int(status), body


def api(prom, path):
    status, body = get(prom, "http://127.0.0.1:9090/api/v1/" + path)
    assert status == 200, body
    return json.loads(body)["data"]


def wait_for(predicate, timeout=60, step=2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def node_target(prom, job):
    targets = api(prom, "targets?state=active")["activeTargets"]
    return [t for t in targets if t["labels"]["job"] == job and t["labels"]["host"] == "mol-monitoring-node"]


def test_the_exporter_serves_node_metrics(node):
    status, body = get(node, "http://127.0.0.1:9100/metrics")
    assert status == 200
    assert "node_cpu_seconds_total" in body
    assert "node_filesystem_avail_bytes" in body


def test_a_textfile_metric_appears_in_the_exporter(node):
    # Written the way tools must: a temp file, then an atomic rename into the directory.
    node.run_expect(
        [0],
        "printf 'mlfleet_molecule_probe 42\\n' > /var/lib/prometheus/node-exporter/.probe.tmp"
        " && mv /var/lib/prometheus/node-exporter/.probe.tmp /var/lib/prometheus/node-exporter/probe.prom",
    )
    try:
        _, body = get(node, "http://127.0.0.1:9100/metrics")
        assert "\nmlfleet_molecule_probe 42\n" in body
        assert "node_textfile_scrape_error 0" in body
    finally:
        node.run("rm -f /var/lib/prometheus/node-exporter/probe.prom")


def test_prometheus_scrapes_the_node_host_at_its_inventory_address(prom):
    targets = wait_for(lambda: [t for t in node_target(prom, "node") if t["health"] == "up"])
    assert targets, node_target(prom, "node")
    assert targets[0]["labels"]["instance"] == f"{NODE_IP}:9100"
    assert targets[0]["labels"]["groups"] == ",inference,"


def test_prometheus_scrapes_the_model_server_with_its_inventory_labels(prom):
    targets = wait_for(lambda: [t for t in node_target(prom, "model") if t["health"] == "up"])
    assert targets, node_target(prom, "model")
    labels = targets[0]["labels"]
    assert (labels["instance"], labels["model"], labels["version"], labels["engine"]) == (
        f"{NODE_IP}:8082",
        "iris",
        "v2",
        "mlserver",
    )
    assert targets[0]["scrapeUrl"] == f"http://{NODE_IP}:8082/metrics"


def test_every_alert_is_loaded(prom):
    groups = api(prom, "rules?type=alert")["groups"]
    names = {r["name"] for g in groups for r in g["rules"]}
    assert names == ALERTS
    # The scenario's per-model threshold became a rule of its own.
    iris = [
        r for g in groups for r in g["rules"] if r["name"] == "ModelLatencyP99High" and 'model="iris"' in r["query"]
    ]
    assert iris and "> 0.5" in iris[0]["query"]


def test_the_installed_configuration_passes_promtool(prom):
    res = prom.run("promtool check config /etc/prometheus/prometheus.yml")
    assert res.rc == 0, res.stdout + res.stderr
    assert "1 rule files found" in res.stdout


def test_alertmanager_is_ready_and_prometheus_uses_it(prom):
    status, _ = get(prom, "http://127.0.0.1:9093/-/ready")
    assert status == 200
    active = wait_for(lambda: api(prom, "alertmanagers")["activeAlertmanagers"])
    assert [a["url"] for a in active] == ["http://127.0.0.1:9093/api/v2/alerts"]


def test_a_stopped_exporter_fires_host_down(node, prom):
    def host_down():
        alerts = api(prom, "alerts")["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "HostDown"]

    assert host_down() == []
    node.run_expect([0], "systemctl stop prometheus-node-exporter")
    try:
        firing = wait_for(lambda: [a for a in host_down() if a["state"] == "firing"], timeout=60)
        assert [a["labels"]["host"] for a in firing] == ["mol-monitoring-node"]
        # ... and reaches Alertmanager.
        received = wait_for(
            lambda: json.loads(get(prom, "http://127.0.0.1:9093/api/v2/alerts?filter=alertname%3DHostDown")[1]),
            timeout=30,
        )
        assert [a["labels"]["host"] for a in received] == ["mol-monitoring-node"]
    finally:
        node.run_expect([0], "systemctl start prometheus-node-exporter")
    assert wait_for(lambda: host_down() == [], timeout=60)


def test_a_drift_textfile_names_the_checked_hosts_and_the_control_host(node, prom):
    """The drift tool's file on a control host: per-host series keep the checked host in `host`."""
    node.run_expect(
        [0],
        "printf '%s\\n' 'mlfleet_drift_changes{host=\"gpu-7\"} 3' 'mlfleet_drift_run_success 1'"
        " > /var/lib/prometheus/node-exporter/.drift.tmp"
        " && mv /var/lib/prometheus/node-exporter/.drift.tmp /var/lib/prometheus/node-exporter/mlfleet_drift.prom",
    )
    try:
        changes = wait_for(lambda: api(prom, "query?query=mlfleet_drift_changes")["result"])
        assert [(s["metric"]["host"], s["metric"].get("checked_from"), s["value"][1]) for s in changes] == [
            ("gpu-7", "mol-monitoring-node", "3")
        ]
        assert "exported_host" not in changes[0]["metric"]
        (run,) = api(prom, "query?query=mlfleet_drift_run_success")["result"]
        assert run["metric"]["host"] == "mol-monitoring-node"
    finally:
        node.run("rm -f /var/lib/prometheus/node-exporter/mlfleet_drift.prom")


def test_the_provisioned_dashboards_query_a_prometheus_that_answers(prom):
    listing = prom.run("ls /var/lib/grafana/dashboards/mlfleet").stdout.split()
    assert sorted(listing) == ["mlfleet-drift.json", "mlfleet-fleet.json", "mlfleet-gpu.json", "mlfleet-serving.json"]
    provider = prom.file("/etc/grafana/provisioning/dashboards/mlfleet.yaml").content_string
    assert 'path: "/var/lib/grafana/dashboards/mlfleet"' in provider
    datasource = prom.file("/etc/grafana/provisioning/datasources/mlfleet.yaml").content_string
    (url,) = [line.split(": ", 1)[1].strip('"') for line in datasource.splitlines() if line.strip().startswith("url:")]
    status, _ = get(prom, f"{url}/-/ready")
    assert status == 200
