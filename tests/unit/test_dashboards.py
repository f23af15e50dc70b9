"""The Grafana dashboards (tools/dashboards.py -> roles/grafana_dashboards/files/dashboards).

- the files are what the code builds, and each one loads into the Foundation SDK's dashboard
  model (generated from Grafana's dashboard schema) and back without losing or changing a field;
- every panel queries the provisioned datasource and every query of every panel returns data from
  a real Prometheus (Debian's binary, beside promtool) that scrapes series shaped like the
  exporters' (node exporter's textfile with the replica and drift metrics, MLServer, HAProxy, DCGM)
  and evaluates the prometheus role's recording rules. The lab's Prometheus runs the same check on
  the fleet and serving dashboards after a rollout (tests/e2e/test_observability.py).
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import dashboards  # noqa: E402
from test_prometheus_rules import GET_PROMTOOL, render  # noqa: E402

FILES = sorted(dashboards.OUT.glob("*.json"))


def panel_queries(board: dict) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every target of every panel."""
    return [(p["title"], t["refId"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]


def without_fallback(expr: str) -> str:
    """A stat's query without its `or vector(0)`: the series behind it must exist too (the fixture
    has a host down, drift found and an alert firing)."""
    return expr.removesuffix(" or vector(0)")


def test_the_files_are_what_the_code_builds() -> None:
    assert [p.name for p in FILES] == sorted(dashboards.render())
    for path in FILES:
        assert path.read_text() == dashboards.render()[path.name], f"{path.name}: run `make dashboards`"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_each_dashboard_round_trips_through_the_schema_model(path: Path) -> None:
    data = json.loads(path.read_text())
    again = json.loads(json.dumps(Dashboard.from_json(data), cls=JSONEncoder))
    assert again == data


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_panel_queries_the_provisioned_datasource(path: Path) -> None:
    board = json.loads(path.read_text())
    assert board["uid"] == path.stem and board["title"].startswith("mlfleet / ")
    for panel in board["panels"]:
        refs = [t["refId"] for t in panel["targets"]]
        assert panel["targets"] and len(set(refs)) == len(refs), panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "mlfleet-prometheus"}, panel["title"]
        assert all(t["datasource"]["uid"] == "mlfleet-prometheus" and t["expr"] for t in panel["targets"])
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
    provisioned = (dashboards.OUT.parent.parent / "templates" / "datasources.yaml.j2").read_text()
    assert "uid: mlfleet-prometheus" in provisioned


# --- A real Prometheus on exporter-shaped series --------------------------------------------------

# MLServer's labels on the inference path's request histogram, and the histogram's buckets.
INFER = 'app_name="mlserver",method="POST",path="/v2/models/iris/infer",status_code="200"'
LE = ["0.005", "0.05", "+Inf"]
# dcgm-exporter's labels of its two GPUs.
GPUS = [
    'gpu="0",UUID="GPU-0aa1",device="nvidia0",modelName="NVIDIA H100 80GB HBM3"',
    'gpu="1",UUID="GPU-0aa2",device="nvidia1",modelName="NVIDIA H100 80GB HBM3"',
]

# What each scrape job serves, as the exporters print it (the target's labels come from the config).
EXPOSITION = {
    # node exporter's textfile collector on a GPU host: the model_server role's replica files.
    "node-gpu": """
# TYPE mlfleet_replica_info gauge
mlfleet_replica_info{model="iris",version="v2",replica="0",container="model-iris",placement="GPU 0 (NUMA 0)"} 1
mlfleet_replica_info{model="iris",version="v2",replica="1",container="model-iris-1",placement="GPU 1 (NUMA 0)"} 1
# TYPE mlfleet_replica_gpu_info gauge
mlfleet_replica_gpu_info{model="iris",version="v2",replica="0",container="model-iris",gpu="0",UUID="GPU-0aa1"} 1
mlfleet_replica_gpu_info{model="iris",version="v2",replica="1",container="model-iris-1",gpu="1",UUID="GPU-0aa2"} 1
""",
    # ... and on the control host: the drift tool's file (drift_schedule), one series per checked host.
    "node-ctl": """
# TYPE mlfleet_drift_changes gauge
mlfleet_drift_changes{host="gpu-1"} 2
mlfleet_drift_changes{host="cpu-1"} 0
# TYPE mlfleet_drift_unreachable gauge
mlfleet_drift_unreachable{host="gpu-1"} 0
mlfleet_drift_unreachable{host="cpu-1"} 0
# TYPE mlfleet_drift_run_success gauge
mlfleet_drift_run_success 1
# TYPE mlfleet_drift_last_success_timestamp_seconds gauge
mlfleet_drift_last_success_timestamp_seconds 1.7649e+09
""",
    # MLServer 1.7 on each replica (its own model/version labels, as exported_* after the target's).
    "model": "\n".join(
        [
            "# TYPE model_infer_request_success counter",
            'model_infer_request_success_total{model="iris",version="v2"} {count}',
            "# TYPE model_infer_request_failure counter",
            'model_infer_request_failure_total{model="iris",version="v2"} 1',
            "# TYPE rest_server_request_duration_seconds histogram",
            *[f'rest_server_request_duration_seconds_bucket{{{INFER},le="{le}"}} {{count}}' for le in LE],
            f"rest_server_request_duration_seconds_sum{{{INFER}}} 1.5",
            f"rest_server_request_duration_seconds_count{{{INFER}}} {{count}}",
            "# TYPE rest_server_requests_in_progress gauge",
            f"rest_server_requests_in_progress{{{INFER}}} 2",
        ]
    )
    + "\n",
    # HAProxy's built-in exporter: one server per replica, one line per state.
    "haproxy": """
# TYPE haproxy_server_status gauge
haproxy_server_status{proxy="iris",server="gpu-1",state="UP"} 1
haproxy_server_status{proxy="iris",server="gpu-1",state="MAINT"} 0
haproxy_server_status{proxy="iris",server="gpu-1-1",state="UP"} 0
haproxy_server_status{proxy="iris",server="gpu-1-1",state="MAINT"} 1
# TYPE haproxy_backend_current_queue gauge
haproxy_backend_current_queue{proxy="iris"} 0
# TYPE haproxy_backend_current_sessions gauge
haproxy_backend_current_sessions{proxy="iris"} 3
""",
    # dcgm-exporter: one series per GPU, with its index, UUID, device and model name.
    "dcgm": "".join(
        f"# TYPE {name} gauge\n{name}{{{GPUS[0]}}} {a}\n{name}{{{GPUS[1]}}} {b}\n"
        for name, a, b in [
            ("DCGM_FI_DEV_GPU_UTIL", 87, 12),
            ("DCGM_FI_DEV_FB_USED", 61234, 20480),
            ("DCGM_FI_DEV_GPU_TEMP", 71, 48),
            ("DCGM_FI_DEV_XID_ERRORS", 0, 0),
        ]
    ),
}
TARGETS = {
    "node-gpu": {"host": "gpu-1"},
    "node-ctl": {"host": "ctl-1"},
    "model": {"host": "gpu-1", "container": "model-iris", "model": "iris", "version": "v1"},
    "haproxy": {"host": "lb-1"},
    "dcgm": {"host": "gpu-1"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prometheus scraping EXPOSITION every second with the role's rules; yields its URL."""
    res = subprocess.run([str(GET_PROMTOOL)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, f"could not get promtool: {res.stderr}"
    binary = Path(res.stdout.strip().splitlines()[-1]).with_name("prometheus")
    assert binary.exists(), f"no prometheus beside {binary.parent}/promtool"
    work = tmp_path_factory.mktemp("prometheus")
    rendered = render(work, ["etc/prometheus/rules/mlfleet.yml", "etc/prometheus/prometheus.yml"], {})
    rules = rendered / "mlfleet.yml"
    # The node job's relabelling, as the role writes it.
    (node_job,) = [
        j
        for j in yaml.safe_load((rendered / "prometheus.yml").read_text())["scrape_configs"]
        if j["job_name"] == "node"
    ]
    scrapes = {"count": 0}

    class Exporter(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            scrapes["count"] += 1
            body = EXPOSITION[self.path.strip("/")].replace("{count}", str(10 * scrapes["count"])).lstrip().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    exporter = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Exporter)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    exporter_address = f"127.0.0.1:{exporter.server_address[1]}"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [
                    {"targets": [exporter_address], "labels": dict(labels, __metrics_path__=f"/{path}")}
                    for path, labels in TARGETS.items()
                    if path.split("-")[0] == job
                ]
                # A host that is down: nothing listens there (up 0, "Hosts down").
                + ([{"targets": [f"127.0.0.1:{free_port()}"], "labels": {"host": "cpu-9"}}] if job == "node" else []),
                "metric_relabel_configs": node_job["metric_relabel_configs"] if job == "node" else [],
            }
            for job in sorted({path.split("-")[0] for path in TARGETS})
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [
            str(binary),
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(work / "prometheus.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        # Enough scrapes and rule evaluations for every 1m rate (two samples of each target, which
        # Prometheus scrapes at its own offsets), the recording rules and the firing alert: wait
        # until every query has data or two minutes have passed (a loaded machine), then the tests
        # assert it query by query.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if not any(empty_queries(url, path) for path in FILES):
                    break
            except OSError:
                pass
            assert proc.poll() is None, (work / "prometheus.log").read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        exporter.shutdown()


def query(url: str, expr: str) -> list:
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def empty_queries(url: str, path: Path) -> list[tuple[str, str]]:
    """(panel title, refId) of each query of the dashboard at path that returns no data."""
    return [
        (title, ref)
        for title, ref, expr in panel_queries(json.loads(path.read_text()))
        if not query(url, without_fallback(dashboards.as_sent(expr)))
    ]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_query_returns_data_from_exporter_shaped_series(prometheus: str, path: Path) -> None:
    board = json.loads(path.read_text())
    empty = empty_queries(prometheus, path)
    assert empty == [], f"{path.stem}: panels without data: {empty}"
    for variable in board.get("templating", {}).get("list", []):
        metric, label = variable["query"].removeprefix("label_values(").removesuffix(")").split(", ")
        assert {s["metric"][label] for s in query(prometheus, metric)}, variable["name"]


def test_the_serving_dashboard_reports_the_running_version_not_the_pin(prometheus: str) -> None:
    board = json.loads((dashboards.OUT / "mlfleet-serving.json").read_text())
    (expr,) = [e for title, _, e in panel_queries(board) if title == "Inferences per second"]
    # The model target is labelled v1 (the inventory's pin); the replica runs v2 (mlfleet_replica_info).
    assert {s["metric"]["version"] for s in query(prometheus, dashboards.as_sent(expr))} == {"v2"}


def test_gpu_panels_name_the_replica_on_each_gpu(prometheus: str) -> None:
    board = json.loads((dashboards.OUT / "mlfleet-gpu.json").read_text())
    (expr,) = [e for title, _, e in panel_queries(board) if title == "GPU utilisation per replica"]
    got = {
        (s["metric"]["gpu"], s["metric"]["container"]): float(s["value"][1])
        for s in query(prometheus, dashboards.as_sent(expr))
    }
    assert got == {("0", "model-iris"): 87.0, ("1", "model-iris-1"): 12.0}


def test_drift_series_name_the_checked_host_and_the_control_host(prometheus: str) -> None:
    """Scraped from the control host, the drift tool's per-host series keep the checked host in `host`."""
    got = {
        (s["metric"]["host"], s["metric"].get("checked_from"), s["metric"].get("exported_host"))
        for s in query(prometheus, "mlfleet_drift_changes")
    }
    assert got == {("gpu-1", "ctl-1", None), ("cpu-1", "ctl-1", None)}
    (run,) = query(prometheus, "mlfleet_drift_run_success")
    assert run["metric"]["host"] == "ctl-1" and "checked_from" not in run["metric"]
