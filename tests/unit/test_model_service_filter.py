"""The model service definition: published ports, firewall rules and LB servers from one place."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.mlfleet.fleet.plugins.filter.model_service import (
    allowed_sources,
    describe,
    lb_servers,
    model_service,
    port_users,
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
    with pytest.raises(AnsibleFilterError, match="would publish host port 8080 twice"):
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
        {"name": "cpu-1", "host": "cpu-1", "replica": 0, "address": "10.0.1.21", "port": 9000,
         "health_path": "/v2/models/iris/ready", "weight": 100}
    ]  # fmt: skip
    llm = lb_servers({"name": "llm", "port": 8001, "weights": {"gpu_inference": 10}}, GROUPS, hostvars, "inference")
    assert [(s["name"], s["port"], s["health_path"], s["weight"]) for s in llm] == [("gpu-1", 8000, "/health", 10)]
    # A host serving no model (or another one) is no server of this backend.
    assert lb_servers({"name": "other", "port": 8002}, GROUPS, hostvars, "inference") == []


def test_each_replica_gets_its_ports_rules_container_and_server() -> None:
    svc = describe(spec(replicas=3, host="cpu-1", metrics_port=8090), GROUPS, HOSTVARS)
    assert [(r["index"], r["container"], r["lb_server"], r["port"]) for r in svc["replicas"]] == [
        (0, "model-iris", "cpu-1", 8080),
        (1, "model-iris-1", "cpu-1-1", 8081),
        (2, "model-iris-2", "cpu-1-2", 8082),
    ]
    assert svc["replicas"][2]["publish"] == ["0.0.0.0:8082:8080", "0.0.0.0:8092:8082"]
    assert svc["replicas"][1]["metrics"] == {"port": 8091, "path": "/metrics"}
    assert [(r["port"], r["comment"]) for r in svc["firewall"]] == [
        (8080, "iris API replica 0"),
        (8090, "iris metrics replica 0"),
        (8081, "iris API replica 1"),
        (8091, "iris metrics replica 1"),
        (8082, "iris API replica 2"),
        (8092, "iris metrics replica 2"),
    ]
    assert svc["publish"] == [p for r in svc["replicas"] for p in r["publish"]]
    # The service's own port and metrics stay replica 0's, as for a single container.
    assert (svc["port"], svc["metrics"]) == (8080, {"port": 8090, "path": "/metrics"})


def test_replicas_whose_port_ranges_overlap_are_refused_with_the_fix() -> None:
    # API 8080-8082 runs into metrics 8082: replica 2's API port would be replica 0's metrics port.
    with pytest.raises(AnsibleFilterError, match=r"host port 8082 twice \(the API port of replica 2 and the metrics "
                       r"port of replica 0\).*leave room between model_server_port"):  # fmt: skip
        describe(spec(replicas=3), GROUPS, HOSTVARS)


@pytest.mark.parametrize("replicas", [0, 65, "two", True, 1.5, None])
def test_a_replica_count_that_is_not_a_whole_number_from_1_to_64_is_refused(replicas: object) -> None:
    with pytest.raises(AnsibleFilterError, match="model_server_replicas must be a whole number of containers"):
        describe(spec(replicas=replicas), GROUPS, HOSTVARS)


def test_the_lb_gets_one_server_per_replica() -> None:
    hostvars = {h: dict(v) for h, v in HOSTVARS.items()}
    hostvars["cpu-1"].update(model_server_name="iris", model_server_version="v2", model_server_replicas=2,
                             model_server_metrics_port=8090, inventory_hostname="cpu-1")  # fmt: skip
    hostvars["gpu-1"].update(model_server_name="iris", model_server_version="v2", inventory_hostname="gpu-1")
    servers = lb_servers({"name": "iris", "weights": {"gpu-1": 50}}, GROUPS, hostvars, "inference")
    assert [(s["name"], s["host"], s["replica"], s["address"], s["port"], s["weight"]) for s in servers] == [
        ("cpu-1", "cpu-1", 0, "10.0.1.21", 8080, 100),
        ("cpu-1-1", "cpu-1", 1, "10.0.1.21", 8081, 100),
        ("gpu-1", "gpu-1", 0, "10.0.1.11", 8080, 50),
    ]


def test_the_ports_of_a_model_used_by_others_are_named() -> None:
    listeners = [{"port": 8080, "name": "nginx"}, {"port": 22, "name": "sshd"}, {"port": 8081, "name": "docker-proxy"}]
    containers = [
        {"Names": ["/web"], "Labels": {}, "Ports": [{"PublicPort": 8081, "PrivatePort": 80}]},
        {"Names": ["/model-iris-1"], "Labels": {"io.mlfleet.model": "iris"}, "Ports": [{"PublicPort": 8081}]},
        {"Names": ["/model-llm"], "Labels": {"io.mlfleet.model": "llm"}, "Ports": [{"PublicPort": 8083}]},
        {"Names": ["/idle"], "Labels": None, "Ports": None},
    ]
    assert port_users([8080, 8081, 8083], listeners, containers, "iris") == [
        "port 8080 is used by process nginx",
        "port 8081 is published by container web",
        "port 8083 is published by container model-llm",
    ]
    # The model's own replicas and docker's proxy for them are no conflict.
    assert port_users([8081], listeners, containers[1:2], "iris") == []


def test_a_host_named_like_another_hosts_replica_is_refused() -> None:
    groups = {"inference": ["cpu-1", "cpu-1-1"]}
    hostvars = {
        "cpu-1": {
            "ansible_host": "10.0.1.21",
            "model_server_name": "iris",
            "model_server_version": "v2",
            "model_server_replicas": 2,
        },
        "cpu-1-1": {"ansible_host": "10.0.1.22", "model_server_name": "iris", "model_server_version": "v2"},
    }
    with pytest.raises(AnsibleFilterError, match="two servers named cpu-1-1"):
        lb_servers(
            {"name": "iris"},
            groups,
            {
                h: v | {"model_server_api_allowed_from": ["any"], "model_server_metrics_allowed_from": ["any"]}
                for h, v in hostvars.items()
            },
            "inference",
        )
