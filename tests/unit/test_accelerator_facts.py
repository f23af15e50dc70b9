"""Tests for the accelerator_facts module and its parsing code (plugins/module_utils/accelerator.py).

No GPU here: nvidia-smi is a script in tmp_path that prints a fixture (see fixtures/nvidia_smi/README.md),
sysfs is a small tree built in tmp_path, /proc is a directory holding a cpuinfo fixture.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from ansible_collections.mlfleet.fleet.plugins.module_utils.accelerator import (
    INFERENCE_CPU_FLAGS,
    AcceleratorParseError,
    count_numa_nodes,
    describe_nvidia_smi_failure,
    format_cpulist,
    normalize_value,
    parse_cpuinfo,
    parse_cpulist,
    parse_cuda_version,
    parse_driver_version,
    parse_gpu_csv,
    parse_gpu_list,
    parse_memtotal_mib,
    pci_bus_id_to_sysfs,
    scan_numa_nodes,
    scan_nvidia_pci_devices,
)
from ansible_collections.mlfleet.fleet.plugins.modules import accelerator_facts
from conftest import FIXTURES
from module_runner import run_module

NVSMI = FIXTURES / "nvidia_smi"
DRIVER_ERROR = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)


def fixture(name: str) -> str:
    return (NVSMI / name).read_text()


# --- parsers ---------------------------------------------------------------------------------------------------


def test_single_a100():
    (gpu,) = parse_gpu_csv(fixture("single_a100.csv"))
    assert gpu == {
        "index": 0,
        "name": "NVIDIA A100-SXM4-80GB",
        "uuid": "GPU-4b7e2d19-8c3a-5f61-b0e4-7a9d13c52e86",
        "memory_total_mib": 81920,
        "memory_used_mib": 4,
        "driver_version": "550.54.15",
        "mig_mode": "Disabled",
        "mig_enabled": False,
        "temperature_c": 32,
        "ecc_errors_uncorrected_volatile": 0,
        "pci_bus_id": "00000000:07:00.0",
        "pci_address": "0000:07:00.0",
    }


def test_eight_h100():
    gpus = parse_gpu_csv(fixture("h100x8.csv"))
    assert [gpu["index"] for gpu in gpus] == list(range(8))
    assert {gpu["name"] for gpu in gpus} == {"NVIDIA H100 80GB HBM3"}
    assert {gpu["memory_total_mib"] for gpu in gpus} == {81559}
    assert [gpu["pci_address"] for gpu in gpus] == [
        "0000:18:00.0",
        "0000:2a:00.0",
        "0000:3a:00.0",
        "0000:5d:00.0",
        "0000:9a:00.0",
        "0000:ab:00.0",
        "0000:ba:00.0",
        "0000:db:00.0",
    ]
    assert len({gpu["uuid"] for gpu in gpus}) == 8
    assert [gpu["ecc_errors_uncorrected_volatile"] for gpu in gpus] == [0] * 7 + [2]
    assert all(gpu["mig_enabled"] is False for gpu in gpus)


def test_mig_enabled():
    gpus = parse_gpu_csv(fixture("mig_enabled.csv"))
    assert [(gpu["mig_mode"], gpu["mig_enabled"]) for gpu in gpus] == [("Enabled", True), ("Disabled", False)]
    assert gpus[0]["name"] == "NVIDIA A100-SXM4-40GB"
    assert gpus[0]["driver_version"] == "535.161.08"


def test_placeholders_become_none():
    l4, rtx = parse_gpu_csv(fixture("mixed_na.csv"))
    assert (l4["mig_mode"], l4["mig_enabled"], l4["ecc_errors_uncorrected_volatile"]) == (None, None, 0)
    assert (rtx["mig_enabled"], rtx["ecc_errors_uncorrected_volatile"]) == (None, None)
    assert rtx["memory_used_mib"] == 284


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("[N/A]", None),
        ("[Not Supported]", None),
        ("N/A", None),
        ("[Unknown Error]", None),
        ("  ", None),
        (" 81559 ", "81559"),
        ("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"),
    ],
)
def test_normalize_value(raw, expected):
    assert normalize_value(raw) == expected


def test_not_supported_in_a_row():
    line = "0, Tesla T4, GPU-x, 15360, 0, 470.57.02, [N/A], [Not Supported], [Not Supported], 00000000:00:1E.0\n"
    (gpu,) = parse_gpu_csv(line)
    assert (gpu["temperature_c"], gpu["ecc_errors_uncorrected_volatile"], gpu["mig_enabled"]) == (None, None, None)
    assert gpu["pci_address"] == "0000:00:1e.0"


def test_wrong_column_count_is_an_error():
    with pytest.raises(AcceleratorParseError, match="has 3 columns, expected 10"):
        parse_gpu_csv("0, NVIDIA A100-SXM4-80GB, GPU-x\n")


def test_empty_output_is_no_gpus():
    assert parse_gpu_csv("") == []
    assert parse_gpu_csv("\n\n") == []


@pytest.mark.parametrize(
    "bus_id, expected",
    [("00000000:DB:00.0", "0000:db:00.0"), ("0000:3b:00.1", "0000:3b:00.1"), ("[N/A]", None), ("garbage", None)],
)
def test_pci_bus_id_to_sysfs(bus_id, expected):
    assert pci_bus_id_to_sysfs(bus_id) == expected


def test_cuda_version_from_version_output():
    text = fixture("version_550.txt")
    assert parse_cuda_version(text) == "12.4"
    assert parse_driver_version(text) == "550.90.07"


def test_cuda_version_from_banner():
    text = fixture("summary_535.txt")
    assert parse_cuda_version(text) == "12.2"
    assert parse_driver_version(text) == "535.161.08"


def test_cuda_version_absent():
    assert parse_cuda_version("NVIDIA-SMI version  : 470.57.02\n") is None
    assert parse_cuda_version(fixture("driver_error.txt")) is None
    assert parse_cuda_version("") is None


def test_driver_error_description():
    message = describe_nvidia_smi_failure(9, fixture("driver_error.txt"), "")
    assert message == DRIVER_ERROR + " (nvidia-smi exit code 9)"
    assert describe_nvidia_smi_failure(1, "", "") == "nvidia-smi printed nothing (nvidia-smi exit code 1)"


def test_gpu_list_with_mig_devices():
    listed = parse_gpu_list(fixture("list_mig.txt"))
    assert sorted(listed) == [0, 1]
    assert listed[0][0] == {"profile": "3g.20gb", "device": 0, "uuid": "MIG-5c1f9e2a-7d43-5b08-a6e1-3f2d8c9b0a47"}
    assert [device["device"] for device in listed[0]] == [0, 1, 2, 3]
    assert listed[1] == []


def test_gpu_list_without_mig_and_empty():
    assert parse_gpu_list("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-6a2c1e7b-0f4d-3b8a-9c5e-1d7f2a4b6c80)\n") == {0: []}
    assert parse_gpu_list("") == {}


@pytest.mark.parametrize(
    "text",
    [
        "  MIG 1g.5gb     Device  0: (UUID: MIG-fb42055e-9e53-5764-9278-438605a3014c)\n",  # no GPU line before it
        "No devices were found\n",
    ],
)
def test_gpu_list_refuses_other_output(text):
    with pytest.raises(AcceleratorParseError):
        parse_gpu_list(text)


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0-3", [0, 1, 2, 3]), ("0-1,4-5\n", [0, 1, 4, 5]), ("7", [7]), ("", []), (" 2 , 0-1 ", [0, 1, 2])],
)
def test_parse_cpulist(text, cpus):
    assert parse_cpulist(text) == cpus


@pytest.mark.parametrize("text", ["0-", "a", "3-1", "0;1", "-1"])
def test_parse_cpulist_refuses_garbage(text):
    with pytest.raises(ValueError):
        parse_cpulist(text)


@pytest.mark.parametrize(("cpus", "text"), [([0, 1, 2, 3, 8], "0-3,8"), ([5], "5"), ([], ""), ([3, 1, 2, 2], "1-3")])
def test_format_cpulist(cpus, text):
    assert format_cpulist(cpus) == text


def test_memtotal():
    assert parse_memtotal_mib("MemTotal:       16384000 kB\n") == 16000
    assert parse_memtotal_mib("Node 1 MemTotal:       2048 kB") == 2
    assert parse_memtotal_mib("nothing") is None


def test_cpuinfo_two_sockets_with_amx():
    cpu = parse_cpuinfo(fixture("cpuinfo_2socket_spr.txt"))
    assert cpu["logical_cores"] == 8
    assert cpu["physical_cores"] == 4
    assert cpu["sockets"] == 2
    assert cpu["model_name"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu["flags"] == {flag: True for flag in INFERENCE_CPU_FLAGS}


def test_cpuinfo_reads_flags_not_vmx_flags():
    text = "processor\t: 0\nmodel name\t: X\nvmx flags\t: avx2 amx_tile\nflags\t\t: fpu avx\n"
    cpu = parse_cpuinfo(text)
    assert [flag for flag, present in cpu["flags"].items() if present] == ["avx"]


def test_cpuinfo_without_topology_lines():
    # e.g. an arm64 guest: no "physical id"/"core id", flags under "Features".
    text = "processor\t: 0\nFeatures\t: fp asimd\n\nprocessor\t: 1\nFeatures\t: fp asimd\n"
    cpu = parse_cpuinfo(text)
    assert (cpu["logical_cores"], cpu["physical_cores"], cpu["sockets"], cpu["model_name"]) == (2, 2, 1, None)
    assert not any(cpu["flags"].values())


def test_cpuinfo_empty():
    cpu = parse_cpuinfo("")
    assert (cpu["logical_cores"], cpu["physical_cores"], cpu["sockets"]) == (0, None, None)


# --- fake host -------------------------------------------------------------------------------------------------


def make_pci_device(sysfs: Path, address: str, vendor: str, pci_class: str, device: str, driver: str | None = None):
    path = sysfs / "bus" / "pci" / "devices" / address
    path.mkdir(parents=True)
    (path / "vendor").write_text(vendor + "\n")
    (path / "class").write_text(pci_class + "\n")
    (path / "device").write_text(device + "\n")
    (path / "numa_node").write_text("1\n" if address.startswith("0000:9") else "-1\n")
    if driver:
        target = sysfs / "bus" / "pci" / "drivers" / driver
        target.mkdir(parents=True, exist_ok=True)
        (path / "driver").symlink_to(target)


@pytest.fixture
def host(tmp_path: Path) -> dict[str, str]:
    """A fake /sys and /proc: two NVIDIA GPUs (one with the nvidia driver, one unbound), an NVIDIA audio
    function and a non-NVIDIA VGA device that must be ignored, 2 NUMA nodes, the 2-socket cpuinfo."""
    sysfs = tmp_path / "sys"
    make_pci_device(sysfs, "0000:18:00.0", "0x10de", "0x030200", "0x2330", driver="nvidia")
    make_pci_device(sysfs, "0000:9a:00.0", "0x10de", "0x030200", "0x2330")
    make_pci_device(sysfs, "0000:9a:00.1", "0x10de", "0x040300", "0x22ba", driver="snd_hda_intel")
    make_pci_device(sysfs, "0000:03:00.0", "0x1a03", "0x030000", "0x2000", driver="ast")
    nodes = sysfs / "devices" / "system" / "node"
    for name in ("node0", "node1", "possible", "online"):
        (nodes / name).mkdir(parents=True)
    # The 2-socket cpuinfo fixture: CPUs 0-1 and 4-5 on socket 0, 2-3 and 6-7 on socket 1.
    for node, cpulist, kib in ((0, "0-1,4-5", 263855100), (1, "2-3,6-7", 264214372)):
        (nodes / f"node{node}" / "cpulist").write_text(cpulist + "\n")
        (nodes / f"node{node}" / "meminfo").write_text(
            f"Node {node} MemTotal:       {kib} kB\nNode {node} MemFree:        1000 kB\n"
        )
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cpuinfo").write_text(fixture("cpuinfo_2socket_spr.txt"))
    (proc / "meminfo").write_text("MemTotal:       528069472 kB\nMemFree:        1000 kB\n")
    return {"sysfs_root": str(sysfs), "proc_root": str(proc)}


def fake_nvidia_smi(
    tmp_path: Path,
    query: str | None,
    rc: int = 0,
    version: str | None = "version_550.txt",
    listing: str = "list_mig.txt",
    listing_rc: int = 0,
) -> str:
    """An executable that answers the GPU query with fixture ``query`` (exit ``rc``), ``--version``
    with fixture ``version`` (or exits 4, like drivers that lack the option, when it is None) and ``-L``
    with fixture ``listing`` (exit ``listing_rc``)."""
    script = tmp_path / "bin" / "nvidia-smi"
    script.parent.mkdir(exist_ok=True)
    version_branch = f'cat "{NVSMI / version}"; exit 0' if version else 'echo "Invalid combination"; exit 4'
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f'  --query-gpu=*) cat "{NVSMI / query}"; exit {rc} ;;\n'
        f"  --version) {version_branch} ;;\n"
        f'  -L) cat "{NVSMI / listing}"; exit {listing_rc} ;;\n'
        f'  *) cat "{NVSMI / "summary_535.txt"}"; exit 0 ;;\n'
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(script)


def test_scan_pci_and_numa(host):
    devices = scan_nvidia_pci_devices(host["sysfs_root"])
    assert devices == [
        {"address": "0000:18:00.0", "device_id": "0x2330", "class": "0x030200", "driver": "nvidia", "numa_node": None},
        {"address": "0000:9a:00.0", "device_id": "0x2330", "class": "0x030200", "driver": None, "numa_node": 1},
    ]
    assert count_numa_nodes(host["sysfs_root"]) == 2
    assert scan_numa_nodes(host["sysfs_root"]) == [
        {"node": 0, "cpus": [0, 1, 4, 5], "cpulist": "0-1,4-5", "memory_total_mib": 257670},
        {"node": 1, "cpus": [2, 3, 6, 7], "cpulist": "2-3,6-7", "memory_total_mib": 258021},
    ]


def test_scan_missing_sysfs(tmp_path):
    assert scan_nvidia_pci_devices(str(tmp_path)) == []
    assert count_numa_nodes(str(tmp_path)) is None
    assert scan_numa_nodes(str(tmp_path)) == []


# --- module end to end ------------------------------------------------------------------------------------------


def test_module_eight_gpus(tmp_path, host):
    nvsmi = fake_nvidia_smi(tmp_path, "h100x8.csv")
    result = run_module(accelerator_facts, {**host, "nvidia_smi_path": nvsmi})
    assert not result.get("failed"), result
    assert result["changed"] is False
    facts = result["ansible_facts"]["accelerators"]
    assert facts == result["accelerators"]
    assert facts["nvidia_smi_found"] is True
    assert facts["nvidia_smi_path"] == nvsmi
    assert facts["gpu_driver_error"] is None
    assert facts["gpu_count"] == 8
    assert facts["driver_version"] == "550.90.07"
    assert facts["cuda_version"] == "12.4"
    assert facts["gpus"][3]["pci_address"] == "0000:5d:00.0"
    assert [device["address"] for device in facts["nvidia_pci_devices"]] == ["0000:18:00.0", "0000:9a:00.0"]
    assert facts["cpu"] == {
        "logical_cores": 8,
        "physical_cores": 4,
        "sockets": 2,
        "numa_nodes": 2,
        "numa": [
            {"node": 0, "cpus": [0, 1, 4, 5], "cpulist": "0-1,4-5", "memory_total_mib": 257670},
            {"node": 1, "cpus": [2, 3, 6, 7], "cpulist": "2-3,6-7", "memory_total_mib": 258021},
        ],
        "model_name": "Intel(R) Xeon(R) Platinum 8480+",
        "flags": {flag: True for flag in INFERENCE_CPU_FLAGS},
    }
    assert facts["memory_total_mib"] == 515692
    # MIG is off on every H100 here: nvidia-smi -L is not run, and no GPU has MIG devices.
    assert all(gpu["mig_devices"] == [] for gpu in facts["gpus"])


def test_module_cuda_version_from_banner_when_version_option_fails(tmp_path, host):
    nvsmi = fake_nvidia_smi(tmp_path, "mig_enabled.csv", version=None)
    facts = run_module(accelerator_facts, {**host, "nvidia_smi_path": nvsmi})["accelerators"]
    assert facts["cuda_version"] == "12.2"
    assert facts["driver_version"] == "535.161.08"
    assert [gpu["mig_enabled"] for gpu in facts["gpus"]] == [True, False]
    assert [device["profile"] for device in facts["gpus"][0]["mig_devices"]] == [
        "3g.20gb",
        "2g.10gb",
        "1g.5gb",
        "1g.5gb",
    ]
    assert facts["gpus"][0]["mig_devices"][2]["uuid"] == "MIG-2e6b8d41-9c05-5a73-b1f8-0d7e5c3a2b96"
    assert facts["gpus"][1]["mig_devices"] == []


def test_module_failing_mig_listing_is_a_driver_error(tmp_path, host):
    nvsmi = fake_nvidia_smi(tmp_path, "mig_enabled.csv", listing="driver_error.txt", listing_rc=9)
    facts = run_module(accelerator_facts, {**host, "nvidia_smi_path": nvsmi})["accelerators"]
    assert facts["gpu_driver_error"].startswith("listing MIG devices: NVIDIA-SMI has failed")
    assert facts["gpu_driver_error"].endswith("(nvidia-smi exit code 9)")


def test_module_found_in_path(tmp_path, host, monkeypatch):
    nvsmi = fake_nvidia_smi(tmp_path, "single_a100.csv")
    monkeypatch.setenv("PATH", f"{os.path.dirname(nvsmi)}{os.pathsep}{os.environ.get('PATH', '')}")
    facts = run_module(accelerator_facts, host)["accelerators"]
    assert facts["nvidia_smi_path"] == nvsmi
    assert facts["gpu_count"] == 1
    assert facts["gpus"][0]["name"] == "NVIDIA A100-SXM4-80GB"


def test_module_driver_error_does_not_fail(tmp_path, host):
    nvsmi = fake_nvidia_smi(tmp_path, "driver_error.txt", rc=9)
    result = run_module(accelerator_facts, {**host, "nvidia_smi_path": nvsmi})
    assert not result.get("failed"), result
    facts = result["ansible_facts"]["accelerators"]
    assert facts["nvidia_smi_found"] is True
    assert facts["gpus"] == []
    assert facts["gpu_count"] == 0
    assert facts["gpu_driver_error"] == DRIVER_ERROR + " (nvidia-smi exit code 9)"
    assert (facts["driver_version"], facts["cuda_version"]) == (None, None)
    # The GPUs are still visible on the PCI bus: "GPU present, driver broken".
    assert len(facts["nvidia_pci_devices"]) == 2


def test_module_unparseable_output_is_reported(tmp_path, host):
    nvsmi = fake_nvidia_smi(tmp_path, "version_550.txt")
    result = run_module(accelerator_facts, {**host, "nvidia_smi_path": nvsmi})
    assert not result.get("failed"), result
    assert result["accelerators"]["gpu_driver_error"].startswith("could not parse nvidia-smi output")


def test_module_hung_nvidia_smi_times_out(tmp_path, host):
    script = tmp_path / "nvidia-smi"
    script.write_text("#!/bin/sh\nexec sleep 30\n")
    script.chmod(0o755)
    facts = run_module(accelerator_facts, {**host, "nvidia_smi_path": str(script), "timeout": 1})["accelerators"]
    assert facts["gpus"] == []
    assert "did not answer within 1 seconds" in facts["gpu_driver_error"]


def test_module_without_nvidia_smi(tmp_path, host, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    # get_bin_path also looks in /sbin, /usr/sbin and /usr/local/sbin; none may hold nvidia-smi here.
    if any(os.path.exists(os.path.join(d, "nvidia-smi")) for d in ("/sbin", "/usr/sbin", "/usr/local/sbin")):
        pytest.skip("this machine has an nvidia-smi in an sbin directory")
    result = run_module(accelerator_facts, host)
    assert not result.get("failed"), result
    facts = result["ansible_facts"]["accelerators"]
    assert facts["nvidia_smi_found"] is False
    assert facts["nvidia_smi_path"] is None
    assert facts["gpus"] == []
    assert facts["gpu_driver_error"] is None
    assert facts["cpu"]["sockets"] == 2


def test_module_missing_explicit_path_is_not_found(tmp_path, host):
    facts = run_module(accelerator_facts, {**host, "nvidia_smi_path": str(tmp_path / "nope")})["accelerators"]
    assert (facts["nvidia_smi_found"], facts["gpus"]) == (False, [])


def test_check_mode_returns_the_same_facts(tmp_path, host):
    args = {**host, "nvidia_smi_path": fake_nvidia_smi(tmp_path, "h100x8.csv")}
    normal = run_module(accelerator_facts, args)
    checked = run_module(accelerator_facts, args, check_mode=True)
    assert not checked.get("failed"), checked
    assert checked["changed"] is False
    assert checked["ansible_facts"] == normal["ansible_facts"]
    assert checked["accelerators"] == normal["accelerators"]


@pytest.mark.parametrize(
    "args, message",
    [
        ({"timeout": 0}, "timeout must be a positive number of seconds, got 0"),
        ({"timeout": -5}, "timeout must be a positive number of seconds, got -5"),
        ({"timeout": "soon"}, "timeout"),
        ({"no_such_option": 1}, "Unsupported parameters"),
    ],
)
def test_bad_options_fail_clearly(host, args, message):
    result = run_module(accelerator_facts, {**host, **args})
    assert result.get("failed") is True
    assert message in result["msg"]


def test_missing_roots_fail_clearly(tmp_path, host):
    result = run_module(accelerator_facts, {**host, "proc_root": str(tmp_path / "no-proc")})
    assert result.get("failed") is True
    assert "proc_root must be an existing directory" in result["msg"]
    empty_proc = tmp_path / "empty-proc"
    empty_proc.mkdir()
    result = run_module(accelerator_facts, {**host, "proc_root": str(empty_proc)})
    assert result.get("failed") is True
    assert "cannot read" in result["msg"] and "cpuinfo" in result["msg"]
