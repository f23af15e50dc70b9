"""The benchmark helpers: the load client against a real local HTTP server, the generated configs."""

from __future__ import annotations

import argparse
import asyncio
import configparser
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import endpoint_bench  # noqa: E402
import fleet_bench  # noqa: E402
import loadclient  # noqa: E402


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ok = self.path == "/v2/models/iris/infer" and json.loads(body)["inputs"][0]["shape"] == [1, 4]
        reply = json.dumps({"outputs": [{"data": [0]}]}).encode() if ok else b"no"
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def client_args(port: int, path: str = "/v2/models/iris/infer") -> argparse.Namespace:
    return argparse.Namespace(host="127.0.0.1", port=port, path=path, connections=2, seconds=0.5, warmup=0.1)


def test_the_load_client_counts_answers_and_orders_its_percentiles(server: int) -> None:
    res = asyncio.run(loadclient.main_async(client_args(server)))
    assert res["requests"] > 10 and res["errors"] == 0
    assert 0 < res["p50_ms"] <= res["p95_ms"] <= res["p99_ms"]
    # The report rounds seconds to 0.01 s and rps to 0.1: the rate must lie within those roundings.
    low = res["requests"] / (res["seconds"] + 0.005) - 0.05
    high = res["requests"] / (res["seconds"] - 0.005) + 0.05
    assert low <= res["rps"] <= high


def test_the_load_client_counts_error_statuses_as_errors(server: int) -> None:
    res = asyncio.run(loadclient.main_async(client_args(server, "/v2/models/other/infer")))
    assert res["requests"] == 0 and res["errors"] > 0 and res["error_kinds"] == ["HTTP 503"]


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [loadclient.percentile(values, q) for q in (50, 95, 99, 100)] == [50.0, 95.0, 99.0, 100.0]


def test_the_stock_profile_keeps_ansible_defaults_and_the_project_one_is_the_repo_cfg(tmp_path: Path) -> None:
    cfgs = fleet_bench.write_configs(tmp_path, ["stock", "project"])
    stock, project = configparser.ConfigParser(), configparser.ConfigParser()
    stock.read(cfgs["stock"])
    project.read(cfgs["project"])
    assert "forks" not in stock["defaults"] and not stock.has_section("ssh_connection")
    assert project["defaults"]["forks"] == "25" and project["ssh_connection"]["pipelining"] == "True"
    # Both find the project's collection and inventory from wherever the copy lives.
    for cfg in (stock, project):
        assert Path(cfg["defaults"]["collections_path"]) == ROOT / "collections"
        assert Path(cfg["defaults"]["inventory"]) == ROOT / "inventories" / "lab"


# HostConfig of a model container as `docker inspect` showed it on the lab (model_server defaults).
HARDENED_HOST_CONFIG = {
    "ReadonlyRootfs": True,
    "Tmpfs": {"/tmp": "rw,noexec,nosuid,size=256m"},
    "CapDrop": ["ALL"],
    "SecurityOpt": ["no-new-privileges:true"],
    "PidsLimit": 512,
}


def test_the_hardened_arm_has_every_flag_the_plain_arm_none_and_each_single_flag_arm_one() -> None:
    arms = endpoint_bench.container_arms(HARDENED_HOST_CONFIG, per_flag=True)
    assert arms["plain"] == []
    assert arms["hardened"] == [
        "--read-only",
        "--tmpfs=/tmp:rw,noexec,nosuid,size=256m",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges:true",
        "--pids-limit=512",
    ]
    singles = [arms[f"only-{name}"] for name in endpoint_bench.FLAGS]
    assert sorted(f for flags in singles for f in flags) == sorted(arms["hardened"])
    assert all(singles)
    assert set(endpoint_bench.container_arms(HARDENED_HOST_CONFIG, per_flag=False)) == {"hardened", "plain"}


def test_a_container_without_a_flag_gives_that_single_flag_arm_no_flags() -> None:
    arms = endpoint_bench.container_arms({"ReadonlyRootfs": True, "CapDrop": None, "PidsLimit": 0}, per_flag=True)
    assert arms["hardened"] == ["--read-only"]
    assert arms["only-pids-limit"] == [] and arms["only-cap-drop"] == []


def test_every_arm_of_a_group_goes_first_once_per_cycle() -> None:
    group = ["a", "b", "c"]
    orders = [endpoint_bench.rotated(group, rnd) for rnd in range(4)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert endpoint_bench.rotated(["lb", "direct"], 1) == ["direct", "lb"]
