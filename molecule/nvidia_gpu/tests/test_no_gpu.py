"""nvidia_gpu on a host without an NVIDIA GPU: skipped with one message, or a clear failure when required."""

testinfra_hosts = ["mol-nvidia-gpu-none"]

HOST = "mol-nvidia-gpu-none"
SKIP_MESSAGE = f"no NVIDIA GPU found on {HOST}: nvidia_gpu skipped"


def test_the_role_skips_with_one_message_and_changes_nothing(run_playbook):
    rc, out = run_playbook("converge.yml", "--limit", HOST)
    assert rc == 0, out
    assert out.count(SKIP_MESSAGE) == 1, out
    assert f"{HOST}" in out and "changed=0" in out.split("PLAY RECAP")[-1], out
    # The role ended after the message: no task of a later concern ran.
    assert "Record the GPU inventory" not in out, out


def test_nothing_of_the_gpu_path_reached_the_host(host):
    assert not host.file("/etc/mlfleet/gpu.json").exists
    assert not host.file("/etc/apt/sources.list.d/mlfleet-debian-nonfree.sources").exists
    assert not host.package("nvidia-driver").is_installed


def test_a_required_gpu_that_is_missing_fails_with_what_was_found(run_playbook):
    rc, out = run_playbook("required.yml")
    assert rc != 0, out
    assert f"nvidia_gpu_required is true, but no NVIDIA GPU was found on {HOST}" in out, out
    assert "no NVIDIA display/3D controller under /sys/bus/pci/devices" in out, out
    assert "no nvidia-smi is installed" in out, out
    assert "lspci -nn -d 10de:" in out, out
