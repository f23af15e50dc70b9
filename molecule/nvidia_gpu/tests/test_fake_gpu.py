"""nvidia_gpu's GPU path with a preinstalled driver, against a fake nvidia-smi that prints recorded output.

What this cannot show (driver/toolkit install, CDI, persistenced, MIG apply, DCGM) is listed in the README.
"""

import contextlib
import json

from conftest import FIXTURES

testinfra_hosts = ["mol-nvidia-gpu-fake"]

HOST = "mol-nvidia-gpu-fake"
FAKE = "/usr/local/share/fake-nvidia-smi"


def _fixture_row(name: str) -> list[str]:
    return [column.strip() for column in (FIXTURES / name).read_text().splitlines()[0].split(",")]


@contextlib.contextmanager
def _fake_state(host, command: str):
    """Change what the fake nvidia-smi prints for the duration of a test, then restore single_a100.csv."""
    assert host.run(command).rc == 0
    try:
        yield
    finally:
        host.run(f"rm -f {FAKE}/driver-error && cp {FAKE}/single_a100.csv {FAKE}/query-gpu.csv")


def test_the_gpu_inventory_records_what_nvidia_smi_reports(host):
    index, name, uuid, memory_total, _used, driver, mig, *_ = _fixture_row("single_a100.csv")
    inventory = json.loads(host.file("/etc/mlfleet/gpu.json").content_string)
    assert inventory["driver_version"] == driver == "550.54.15"
    assert inventory["cuda_version"] == "12.4"  # from version_550.txt (nvidia-smi --version)
    assert inventory["gpu_count"] == 1
    assert inventory["gpus"] == [
        {
            "index": int(index),
            "name": name,
            "uuid": uuid,
            "memory_total_mib": int(memory_total),
            "driver_version": driver,
            "mig_mode": mig,
            "pci_address": "0000:07:00.0",
            "mig_devices": [],  # MIG is off in single_a100.csv: nvidia-smi -L is not asked
        }
    ]


def test_a_driver_older_than_the_minimum_fails(run_playbook):
    rc, out = run_playbook("converge.yml", "--limit", HOST, "-e", "nvidia_gpu_driver_min_version=560.0")
    assert rc != 0, out
    assert "is 550.54.15, older than nvidia_gpu_driver_min_version 560.0" in out, out


def test_a_failing_nvidia_smi_is_named_when_the_host_is_skipped_or_fails(host, run_playbook):
    # Without an NVIDIA PCI device (a container sees none) a failing nvidia-smi does not make a GPU host:
    # the role skips, but says why, and fails with the driver's own error where a GPU is required.
    error = "couldn't communicate with the NVIDIA driver"
    with _fake_state(host, f"touch {FAKE}/driver-error"):
        rc, skipped = run_playbook("converge.yml", "--limit", HOST)
        rc_required, failed = run_playbook("converge.yml", "--limit", HOST, "-e", "nvidia_gpu_required=true")
    assert rc == 0, skipped
    assert f"no NVIDIA GPU found on {HOST}: nvidia_gpu skipped (nvidia-smi is installed but failed:" in skipped, skipped
    assert error in skipped and "exit code 9" in skipped, skipped
    assert rc_required != 0, failed
    assert "nvidia-smi (/usr/local/bin/nvidia-smi) reported no GPU: NVIDIA-SMI has failed" in failed, failed


def test_the_mig_state_is_reported_and_a_hardware_change_shows_as_drift(host, run_playbook):
    before = host.file("/etc/mlfleet/gpu.json").content_string
    with _fake_state(host, f"cp {FAKE}/mig_enabled.csv {FAKE}/query-gpu.csv"):
        rc, out = run_playbook("converge.yml", "--limit", HOST, "--check", "--diff")
    assert rc == 0, out
    assert "GPU 0 (NVIDIA A100-SXM4-40GB): MIG Enabled; GPU 1 (NVIDIA A100-SXM4-40GB): MIG Disabled" in out, out
    # --diff shows the inventory drifting to the two new GPUs; --check left the file as it was.
    assert '+  "gpu_count": 2' in out and "GPU-8e3f1b6a-2d74-c95e-0a1f-7b4c8d2e5f31" in out, out
    # With MIG on, the module lists GPU 0's MIG devices (nvidia-smi -L) and the inventory records them.
    assert '"profile": "3g.20gb"' in out and "MIG-5c1f9e2a-7d43-5b08-a6e1-3f2d8c9b0a47" in out, out
    assert host.file("/etc/mlfleet/gpu.json").content_string == before


def test_a_mig_layout_is_checked_against_the_gpus_and_its_drift_reported(host, run_playbook):
    # Only the decision is shown here: nvidia-smi mig cannot be faked meaningfully (see README).
    missing = '{"nvidia_gpu_mig_profiles": [{"gpu": 5, "profiles": ["1g.10gb"]}]}'
    mig_off = '{"nvidia_gpu_mig_profiles": [{"gpu": 0, "profiles": []}, {"gpu": 1, "profiles": []}]}'
    rc_missing, out_missing = run_playbook("converge.yml", "--limit", HOST, "-e", missing)
    with _fake_state(host, f"cp {FAKE}/mig_enabled.csv {FAKE}/query-gpu.csv"):
        rc_off, out_off = run_playbook("converge.yml", "--limit", HOST, "--check", "-e", mig_off)
    assert rc_missing != 0, out_missing
    assert f"nvidia_gpu_mig_profiles names GPU 5 on {HOST}, but the host has GPUs 0." in out_missing, out_missing
    assert rc_off == 0, out_off
    # GPU 0 has MIG on and must go off; GPU 1 already has it off and is left alone.
    assert f"GPU 0 on {HOST}: MIG mode would be turned off" in out_off, out_off
    assert f"GPU 1 on {HOST}: MIG mode would be turned" not in out_off, out_off
