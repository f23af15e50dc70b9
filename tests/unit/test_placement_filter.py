"""Tests for the placement filter: replicas on whole GPUs, MIG devices and CPU sets, and every refusal.

The hosts' facts are built with the accelerator_facts parsers from the recorded nvidia-smi outputs in
fixtures/nvidia_smi (no GPU here; see its README), plus a NUMA layout like a 2-socket server's.
"""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.mlfleet.fleet.plugins.filter.placement import memory_mib, placement
from ansible_collections.mlfleet.fleet.plugins.module_utils.accelerator import (
    parse_gpu_csv,
    parse_gpu_list,
    pci_bus_id_to_sysfs,
)
from conftest import FIXTURES

NVSMI = FIXTURES / "nvidia_smi"
GIB = 1024


def gpu_host(csv: str, listing: str | None = None, memory_gib: int = 2048) -> dict:
    """Facts of a 2-socket host (CPUs 0-55 on node 0, 56-111 on node 1) with the GPUs of a recorded query.
    GPUs on buses below 0x80 sit on node 0, the others on node 1, as on an HGX board."""
    gpus = parse_gpu_csv((NVSMI / csv).read_text())
    listed = parse_gpu_list((NVSMI / listing).read_text()) if listing else {}
    for gpu in gpus:
        gpu["mig_devices"] = listed.get(gpu["index"], []) if gpu["mig_enabled"] else []
    pci = [
        {"address": gpu["pci_address"], "numa_node": 0 if int(gpu["pci_address"][5:7], 16) < 0x80 else 1}
        for gpu in gpus
    ]
    return {
        "gpus": gpus,
        "nvidia_pci_devices": pci,
        "cpu": {
            "logical_cores": 112,
            "numa": [
                {"node": 0, "cpus": list(range(0, 56)), "cpulist": "0-55", "memory_total_mib": memory_gib * GIB // 2},
                {
                    "node": 1,
                    "cpus": list(range(56, 112)),
                    "cpulist": "56-111",
                    "memory_total_mib": memory_gib * GIB // 2,
                },
            ],
        },
        "memory_total_mib": memory_gib * GIB,
    }


H100X8 = gpu_host("h100x8.csv")
MIG = gpu_host("mig_enabled.csv", "list_mig.txt", memory_gib=512)
# The lab's CPU hosts: 2 cores, no NUMA node in sysfs (containers), 3 GiB.
LAB = {"gpus": [], "nvidia_pci_devices": [], "cpu": {"logical_cores": 2, "numa": []}, "memory_total_mib": 3072}


def vllm(**extra) -> dict:
    return {"name": "llama", "version": "v1", "engine": "vllm", "port": 8000, "memory": "32g", **extra}


def refusal(deployments, facts, **kwargs) -> str:
    with pytest.raises(AnsibleFilterError) as error:
        placement(deployments, facts, "gpu-1", **kwargs)
    return str(error.value)


# --- placements ------------------------------------------------------------------------------------------------


def test_one_replica_per_gpu_on_an_eight_gpu_host():
    replicas = placement([vllm(replicas="per_gpu", cpus_per_replica=8)], H100X8, "gpu-1")
    assert [r["name"] for r in replicas] == [f"llama-{i}" for i in range(8)]
    assert [r["port"] for r in replicas] == list(range(8000, 8008))
    assert [r["gpus"] for r in replicas] == [[i] for i in range(8)]
    # Containers are pinned by GPU UUID (indexes can change order across reboots), CPUs from the GPU's node.
    assert replicas[0]["device_ids"] == [H100X8["gpus"][0]["uuid"]]
    assert replicas[0]["device"] == "GPU 0 (NUMA 0)"
    assert replicas[0]["cpuset_cpus"] == "0-7"
    assert replicas[4]["device"] == "GPU 4 (NUMA 1)" and replicas[4]["cpuset_cpus"] == "56-63"
    assert all(r["host"] == "gpu-1" and r["version"] == "v1" and r["engine"] == "vllm" for r in replicas)


def test_tensor_parallel_replicas_take_groups_of_gpus():
    replicas = placement([vllm(replicas="per_gpu", gpus_per_replica=2)], H100X8, "gpu-1")
    assert [r["gpus"] for r in replicas] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert replicas[1]["device"] == "GPU 2,3"
    assert len(replicas[1]["device_ids"]) == 2


def test_two_models_share_a_host_on_their_own_gpus():
    replicas = placement(
        [vllm(replicas=6, gpus_per_replica=1), {"name": "embed", "version": "3", "port": 9000, "gpu_devices": [6, 7]}],
        H100X8,
        "gpu-1",
    )
    assert [r["gpus"] for r in replicas if r["deployment"] == "embed"] == [[6], [7]]
    assert [r["gpus"] for r in replicas if r["deployment"] == "llama"] == [[i] for i in range(6)]


def test_mig_replicas_sit_on_their_profile_devices():
    replicas = placement(
        [
            {
                "name": "small",
                "version": "1",
                "port": 8100,
                "mig_profile": "1g.5gb",
                "replicas": "per_mig_device",
                "memory": "4g",
            }
        ],
        MIG,
        "mig-1",
    )
    assert [r["mig_device"] for r in replicas] == [
        "MIG-2e6b8d41-9c05-5a73-b1f8-0d7e5c3a2b96",
        "MIG-d84a1f27-3e6c-5b90-9a2d-7f1c0e8b4d53",
    ]
    assert replicas[0]["device_ids"] == ["MIG-2e6b8d41-9c05-5a73-b1f8-0d7e5c3a2b96"]
    assert replicas[1]["device"] == "MIG 1g.5gb on GPU 0 (device 3)"


def test_whole_gpu_beside_mig_devices():
    # GPU 0 is sliced; a whole-GPU deployment gets GPU 1, the only one with MIG off.
    replicas = placement([vllm(replicas="per_gpu", memory="16g")], MIG, "mig-1")
    assert [r["gpus"] for r in replicas] == [[1]]


def test_one_replica_per_numa_node_on_a_cpu_host():
    cpu_host = {**H100X8, "gpus": [], "nvidia_pci_devices": []}
    replicas = placement(
        [
            {
                "name": "iris",
                "version": "2",
                "port": 8080,
                "metrics_port": 8180,
                "replicas": "per_numa_node",
                "memory": "8g",
            }
        ],
        cpu_host,
        "cpu-big",
    )
    assert [(r["cpuset_cpus"], r["cpuset_mems"]) for r in replicas] == [("0-55", "0"), ("56-111", "1")]
    assert [r["metrics_port"] for r in replicas] == [8180, 8181]
    assert replicas[1]["device"] == "CPU 56-111 (NUMA 1)"


def test_lab_host_two_replicas_and_a_second_model():
    replicas = placement(
        [
            {"name": "iris", "version": "v1", "port": 8080, "metrics_port": 8082, "replicas": 2, "memory": "512m"},
            {"name": "wine", "version": "v1", "port": 8090, "memory": "512m"},
        ],
        LAB,
        "cpu-1",
    )
    assert [(r["name"], r["port"], r["metrics_port"]) for r in replicas] == [
        ("iris-0", 8080, 8082),
        ("iris-1", 8081, 8083),
        ("wine-0", 8090, None),
    ]
    assert all(r["device"] == "CPU (shared)" and r["cpuset_cpus"] is None for r in replicas)


def test_explicit_cpusets():
    replicas = placement(
        [{"name": "iris", "version": "v1", "port": 8080, "replicas": 2, "cpusets": ["0-1", "2,3"], "memory": 512}],
        H100X8,
        "gpu-1",
    )
    assert [r["cpuset_cpus"] for r in replicas] == ["0-1", "2-3"]


@pytest.mark.parametrize(
    ("text", "mib"), [("512m", 512), ("16g", 16384), ("1t", 1048576), (2048, 2048), ("1048576", 1)]
)
def test_memory_notation(text, mib):
    assert memory_mib(text, "x") == mib


# --- refusals (before any host is changed: the rollout's preflight runs this) ----------------------------------


def test_too_many_gpus():
    message = refusal([vllm(replicas=5, gpus_per_replica=2)], H100X8)
    assert message.startswith("gpu-1: deployment llama asks for 10 GPU(s) (5 replica(s) x 2)"), message
    assert "8 of the host's 8 whole GPU(s) are free" in message


def test_a_gpu_the_host_lacks():
    message = refusal([vllm(gpu_devices=[7, 8])], H100X8)
    assert message.startswith("gpu-1: deployment llama asks for GPU 8, which the host does not have (GPUs: 0, 1, 2"), (
        message
    )


def test_unknown_mig_profile():
    message = refusal([{"name": "small", "version": "1", "port": 8100, "mig_profile": "1g.10gb"}], MIG)
    assert "deployment small asks for MIG profile '1g.10gb', which no GPU of the host offers" in message, message
    assert "its MIG devices are 1g.5gb, 2g.10gb, 3g.20gb" in message, message


def test_mig_profile_on_a_host_without_mig():
    message = refusal([{"name": "small", "version": "1", "port": 8100, "mig_profile": "1g.10gb"}], H100X8)
    assert "it has no MIG devices (MIG is off)" in message, message


def test_more_mig_replicas_than_devices():
    message = refusal([{"name": "small", "version": "1", "port": 8100, "mig_profile": "2g.10gb", "replicas": 2}], MIG)
    assert "asks for 2 MIG device(s) of profile 2g.10gb, but 1 are free" in message, message


def test_a_gpu_used_twice():
    message = refusal(
        [vllm(gpu_devices=[0, 1]), {"name": "embed", "version": "3", "port": 9000, "gpu_devices": [1]}], H100X8
    )
    assert message.startswith("gpu-1: GPU 1 is used twice: by llama-1 and by embed-0."), message


def test_gpu_devices_must_all_be_used():
    message = refusal([vllm(gpu_devices=[0, 1, 2], gpus_per_replica=2)], H100X8)
    assert "lists 3 GPU(s) in gpu_devices, but 1 replica(s) x 2 use 2" in message, message


def test_a_whole_gpu_in_mig_mode():
    message = refusal([vllm(gpu_devices=[0])], MIG)
    assert "asks for the whole GPU 0, which is in MIG mode" in message, message


def test_a_cpu_used_twice():
    message = refusal(
        [
            {"name": "a", "version": "1", "port": 8000, "cpusets": ["0-3"], "memory": "1g"},
            {"name": "b", "version": "1", "port": 8001, "cpusets": ["3-5"], "memory": "1g"},
        ],
        H100X8,
    )
    assert message.startswith("gpu-1: CPU 3 is used twice: by a-0 and by b-0."), message


def test_a_port_collision_between_deployments():
    message = refusal(
        [vllm(replicas=2, memory="1g"), {"name": "embed", "version": "3", "port": 8001, "memory": "1g"}], H100X8
    )
    assert message.startswith("gpu-1: port 8001 is used twice: by llama-1 (API) and by embed-0 (API)."), message


def test_a_port_collision_with_a_service_of_the_host():
    message = refusal(
        [vllm(metrics_port=9099, replicas=2, memory="1g")], H100X8, reserved_ports={9100: "node exporter"}
    )
    assert message.startswith("gpu-1: port 9100 is used twice: by node exporter and by llama-1 (metrics)."), message


def test_memory_overcommitted():
    message = refusal([vllm(replicas="per_gpu", memory="300g")], H100X8, memory_reserve_mib=4096)
    assert message.startswith("gpu-1: memory overcommitted: the replicas ask 2457600 MiB"), message
    assert "plus 4096 MiB kept for the host, but it has 2097152 MiB" in message, message


def test_memory_overcommitted_on_a_numa_node():
    message = refusal(
        [{"name": "iris", "version": "2", "port": 8080, "replicas": "per_numa_node", "memory": "1100g"}],
        {**H100X8, "memory_total_mib": 4096 * GIB},
    )
    assert "memory overcommitted on NUMA node 0: iris-0 1126400 MiB > 1048576 MiB" in message, message


@pytest.mark.parametrize(
    ("deployment", "expected"),
    [
        ({"name": "x", "version": "1", "port": 1, "gpus_per_replcia": 1}, "unknown option(s) gpus_per_replcia"),
        ({"name": "x", "version": "1"}, "'port' is required"),
        ({"name": "X Y", "version": "1", "port": 8000}, "must be lower-case letters"),
        ({"name": "x", "version": "1", "port": 8000, "replicas": "many"}, "replicas must be a number or one of"),
        ({"name": "x", "version": "1", "port": 8000, "replicas": 0}, "replicas must be at least 1, got 0"),
        ({"name": "x", "version": "1", "port": 0}, "port must be between 1 and 65535, got 0"),
        ({"name": "x", "version": "1", "port": 8000, "memory": "lots"}, "memory 'lots' is not a size"),
        ({"name": "x", "version": "1", "port": 8000, "cpusets": ["0"], "replicas": 2}, "one CPU set per replica (2)"),
        ({"name": "x", "version": "1", "port": 8000, "cpusets": ["0-"]}, "is not a CPU list"),
        (
            {"name": "x", "version": "1", "port": 8000, "mig_profile": "1g.5gb", "gpus_per_replica": 1},
            "exclude each other",
        ),
        ({"name": "x", "version": "1", "port": 8000, "replicas": "per_mig_device"}, "needs a mig_profile"),
        ({"name": "x", "version": "1", "port": 65535, "replicas": 2}, "run past port 65535"),
    ],
)
def test_bad_input_is_refused_with_its_reason(deployment, expected):
    assert expected in refusal([deployment], H100X8)


def test_gpus_asked_on_a_host_without_gpus():
    message = refusal([vllm(replicas="per_gpu", memory="1g")], LAB)
    assert "replicas per_gpu with 1 GPU(s) each, but the host has 0 free whole GPU(s) (GPUs: none)" in message, message


def test_numa_pinning_without_numa_nodes():
    message = refusal([{"name": "x", "version": "1", "port": 8000, "replicas": "per_numa_node", "memory": "1g"}], LAB)
    assert "the host reports no NUMA nodes" in message


def test_the_sysfs_address_matches_the_pci_list():
    # The GPU's NUMA node is found through pci_address, the form nvidia_pci_devices uses.
    assert H100X8["gpus"][7]["pci_address"] == pci_bus_id_to_sysfs(H100X8["gpus"][7]["pci_bus_id"])
