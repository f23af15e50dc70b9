"""The model service definition: published ports, firewall rules and LB servers from one place."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.mlfleet.fleet.plugins.filter.model_service import (
    allowed_sources,
    describe,
    lb_servers,
    model_service,
)

GROUPS = {
    "loadbalancers": ["lb-1"],
    "monitoring": ["obs-1"],
    "inference": ["cpu-1", "gpu-1"],
    "gpu_inference": ["gpu-1"],
    "named": ["db-1"],
}
HOSTVARS = {
    "lb-1": {"ansible_host": "10.0.0.10"},
    "obs-1": {"ansible_host": "10.0.0.30"},
    "cpu-1": {"ansible_host": "10.0.1.21"},
    "gpu-1": {"ansible_host": "10.0.1.11"},
    "db-1": {"ansible_host": "db-1.example.internal"},
}
MLSERVER = {
    "http_port": 8080,
    "grpc_port": 8081,
    "metrics_port": 8082,
    "metrics_path": "/metrics",
    "health_protocol": "v2",
}
VLLM = {
    "http_port": 8000,
    "grpc_port": None,
    "metrics_port": None,
    "metrics_path": "/metrics",
    "metrics_on_api_port": True,
    "health_protocol": "openai",
}


def spec(**over: object) -> dict:
    base = {
        "name": "iris",
        "version": "v2",
        "engine": "mlserver",
        "profile": MLSERVER,
        "address": "10.0.1.21",
        "port": 8080,
        "metrics_port": 8082,
        "grpc_port": None,
        "bind_address": "0.0.0.0",
        "api_allowed_from": ["loadbalancers", "monitoring"],
        "metrics_allowed_from": ["monitoring"],
        "grpc_allowed_from": [],
    }
    return base | over


def test_every_published_port_gets_its_rule() -> None:
    svc = describe(spec(), GROUPS, HOSTVARS)
    assert svc["publish"] == ["0.0.0.0:8080:8080", "0.0.0.0:8082:8082"]
    assert svc["firewall"] == [
        {"port": 8080, "proto": "tcp", "sources": ["10.0.0.10", "10.0.0.30"], "comment": "iris API"},
        {"port": 8082, "proto": "tcp", "sources": ["10.0.0.30"], "comment": "iris metrics"},
    ]
    assert svc["health_path"] == "/v2/models/iris/ready"
    assert svc["metrics"] == {"port": 8082, "path": "/metrics"}


def test_vllm_serves_metrics_on_its_api_port() -> None:
    svc = describe(spec(engine="vllm", profile=VLLM, port=8000, metrics_port=None), GROUPS, HOSTVARS)
    assert svc["publish"] == ["0.0.0.0:8000:8000"]
    assert svc["metrics"] == {"port": 8000, "path": "/metrics"}
    assert svc["health_path"] == "/health"


def test_a_grpc_port_needs_someone_allowed() -> None:
    with pytest.raises(AnsibleFilterError, match="model_server_grpc_allowed_from is empty.*gRPC port 8081"):
        describe(spec(grpc_port=8081), GROUPS, HOSTVARS)
    svc = describe(spec(grpc_port=8081, grpc_allowed_from=["any"]), GROUPS, HOSTVARS)
    assert svc["firewall"][-1]["sources"] == ["0.0.0.0/0", "::/0"]


@pytest.mark.parametrize("port", [0, 65536, "http", -1])
def test_ports_out_of_range_are_refused(port: object) -> None:
    with pytest.raises(AnsibleFilterError, match="model_server_port must be a port between 1 and 65535"):
        describe(spec(port=port), GROUPS, HOSTVARS)


def test_one_port_published_twice_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="more than once"):
        describe(spec(metrics_port=8080), GROUPS, HOSTVARS)


def test_a_mistyped_group_is_named() -> None:
    with pytest.raises(AnsibleFilterError, match="'lodbalancers' is neither an inventory group"):
        allowed_sources(["lodbalancers"], GROUPS, HOSTVARS, "model_server_api_allowed_from")


def test_a_group_whose_host_has_no_address_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="db-1 has ansible_host 'db-1.example.internal'"):
        allowed_sources(["named"], GROUPS, HOSTVARS, "x_allowed_from")


def test_addresses_and_cidrs_are_normalised() -> None:
    assert allowed_sources(["10.1.0.0/16", "10.0.0.30", "2001:db8::/32", "monitoring"], GROUPS, HOSTVARS, "x") == [
        "10.0.0.30",
        "10.1.0.0/16",
        "2001:db8::/32",
    ]


def test_a_host_is_described_from_its_variables_and_the_role_defaults() -> None:
    # Only the name and image are set: ports, engine and who may reach them are model_server's defaults.
    svc = model_service({"inventory_hostname": "cpu-1", "ansible_host": "10.0.1.21", "model_server_name": "iris",
                         "model_server_version": "v2"}, GROUPS, HOSTVARS)  # fmt: skip
    assert svc["publish"] == ["0.0.0.0:8080:8080", "0.0.0.0:8082:8082"]
    assert [r["sources"] for r in svc["firewall"]] == [["10.0.0.10", "10.0.0.30"], ["10.0.0.30"]]
    assert svc["profile"]["health_protocol"] == "v2"
    # A host without a model has no service.
    assert model_service({"inventory_hostname": "lb-1"}, GROUPS, HOSTVARS) == {}


def test_an_unknown_engine_is_named() -> None:
    with pytest.raises(AnsibleFilterError, match="model_server_engine: 'torchserve' is none of"):
        model_service({"model_server_name": "iris", "model_server_engine": "torchserve"}, GROUPS, HOSTVARS)


def test_the_lb_servers_come_from_the_hosts_services() -> None:
    hostvars = {h: dict(v) for h, v in HOSTVARS.items()}
    hostvars["cpu-1"].update(model_server_name="iris", model_server_version="v2", model_server_port=9000)
    hostvars["gpu-1"].update(model_server_name="llm", model_server_version="1", model_server_engine="vllm",
                             model_server_port=8000, model_server_metrics_port=None)  # fmt: skip
    assert lb_servers({"name": "iris", "port": 8000}, GROUPS, hostvars, "inference") == [
        {"name": "cpu-1", "address": "10.0.1.21", "port": 9000, "health_path": "/v2/models/iris/ready", "weight": 100}
    ]
    llm = lb_servers({"name": "llm", "port": 8001, "weights": {"gpu_inference": 10}}, GROUPS, hostvars, "inference")
    assert [(s["name"], s["port"], s["health_path"], s["weight"]) for s in llm] == [("gpu-1", 8000, "/health", 10)]
    # A host serving no model (or another one) is no server of this backend.
    assert lb_servers({"name": "other", "port": 8002}, GROUPS, hostvars, "inference") == []
