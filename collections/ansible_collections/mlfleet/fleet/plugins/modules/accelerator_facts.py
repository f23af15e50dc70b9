#!/usr/bin/python
# Copyright: (c) mlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: accelerator_facts
short_description: Gather facts about a host's NVIDIA GPUs and CPU for ML inference
description:
  - Queries C(nvidia-smi) for the GPUs the driver can see, with memory, MIG mode, temperature,
    uncorrected ECC errors and PCI bus id, and the CUDA version the driver supports.
  - Lists NVIDIA display and 3D controllers found in sysfs whether or not a driver is bound, so a role
    can tell a host without GPUs from a host whose GPUs have no working driver.
  - Lists the MIG devices of GPUs that have MIG on (C(nvidia-smi -L)), with their profile and UUID.
  - Summarizes the CPU from C(/proc/cpuinfo) and sysfs (cores, sockets, NUMA nodes with their CPUs and memory,
    and the instruction set flags that CPU inference kernels use), and the host's memory.
  - Never fails because of the GPU driver. When C(nvidia-smi) is missing, RV(accelerators.nvidia_smi_found)
    is V(false); when it fails or hangs, RV(accelerators.gpus) is empty and
    RV(accelerators.gpu_driver_error) says why. Roles decide what to do about either.
  - The facts are returned both as C(ansible_facts.accelerators) and as the top-level RV(accelerators) key,
    so they can be used with or without C(register).
author:
  - mlfleet contributors (@mlfleet)
requirements:
  - Linux (reads C(/proc) and C(/sys)).
  - C(nvidia-smi) from the NVIDIA driver for GPU details (optional).
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: The module only reads; check mode returns the same facts.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  facts:
    description: Action returns an C(ansible_facts) dictionary that will update existing host facts.
    support: full
options:
  nvidia_smi_path:
    description:
      - Path to the C(nvidia-smi) executable.
      - When not set, C(nvidia-smi) is searched for in E(PATH) and the usual system directories.
      - When the path does not exist or is not executable, the module reports
        RV(accelerators.nvidia_smi_found=false) instead of failing.
    type: path
  timeout:
    description:
      - Seconds each C(nvidia-smi) call may take. A call that takes longer is killed and reported in
        RV(accelerators.gpu_driver_error) (a hung C(nvidia-smi) is a typical symptom of a broken driver).
      - Must be a positive integer.
    type: int
    default: 30
  sysfs_root:
    description:
      - Where sysfs is mounted. Meant for testing against a fake tree; leave the default on real hosts.
    type: path
    default: /sys
  proc_root:
    description:
      - Where procfs is mounted (C(cpuinfo) is read from it). Meant for testing; leave the default on real hosts.
    type: path
    default: /proc
notes:
  - C(nvidia-smi) is run with C(--format=csv,noheader,nounits) and C(--query-gpu=) set to these fields, in this order;
    C(index), C(name), C(uuid), C(memory.total), C(memory.used), C(driver_version), C(mig.mode.current),
    C(temperature.gpu), C(ecc.errors.uncorrected.volatile.total), C(pci.bus_id).
    Values that C(nvidia-smi) reports as C([N/A]) or C([Not Supported]) are returned as V(null).
  - The CUDA version is read from C(nvidia-smi --version) (newer drivers) and, when that gives none,
    from the banner of plain C(nvidia-smi), for example C(CUDA Version 12.4). It is the highest CUDA version the
    driver supports, not the version of an installed CUDA toolkit.
seealso:
  - name: nvidia-smi documentation
    description: The NVIDIA System Management Interface.
    link: https://docs.nvidia.com/deploy/nvidia-smi/index.html
"""

EXAMPLES = r"""
- name: Gather accelerator facts
  mlfleet.fleet.accelerator_facts:

- name: Fail where a GPU is on the PCI bus but the driver does not answer
  ansible.builtin.assert:
    that:
      - ansible_facts.accelerators.gpus | length == ansible_facts.accelerators.nvidia_pci_devices | length
    fail_msg: >-
      {{ ansible_facts.accelerators.nvidia_pci_devices | length }} NVIDIA GPU(s) on the PCI bus, but the driver
      reports {{ ansible_facts.accelerators.gpus | length }}:
      {{ ansible_facts.accelerators.gpu_driver_error | default('no error text', true) }}

- name: Use a driver installed outside PATH, with a short timeout
  mlfleet.fleet.accelerator_facts:
    nvidia_smi_path: /usr/local/nvidia/bin/nvidia-smi
    timeout: 10
  register: accel

- name: Pick the CPU inference backend
  ansible.builtin.set_fact:
    cpu_backend: >-
      {{ 'amx' if accel.accelerators.cpu.flags.amx_bf16
         else 'avx512' if accel.accelerators.cpu.flags.avx512f
         else 'avx2' }}
"""

RETURN = r"""
accelerators:
  description:
    - Facts about the host's accelerators and CPU. Also set as C(ansible_facts.accelerators).
  returned: always
  type: dict
  contains:
    nvidia_smi_found:
      description: Whether an executable C(nvidia-smi) was found.
      type: bool
      returned: always
      sample: true
    nvidia_smi_path:
      description: The C(nvidia-smi) that was run; V(null) when none was found.
      type: str
      returned: always
      sample: /usr/bin/nvidia-smi
    gpu_driver_error:
      description:
        - Why C(nvidia-smi) gave no GPU list although it exists (it failed, hung, or printed something
          unparseable), with its exit code. V(null) when it worked or was not found.
      type: str
      returned: always
      sample: >-
        NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest
        NVIDIA driver is installed and running. (nvidia-smi exit code 9)
    driver_version:
      description: NVIDIA driver version reported by C(nvidia-smi); V(null) without a working driver.
      type: str
      returned: always
      sample: 550.54.15
    cuda_version:
      description: Highest CUDA version the driver supports; V(null) without a working driver.
      type: str
      returned: always
      sample: "12.4"
    gpu_count:
      description: Number of GPUs C(nvidia-smi) reported (the length of RV(accelerators.gpus)).
      type: int
      returned: always
      sample: 8
    gpus:
      description: GPUs as reported by C(nvidia-smi), in its order. Empty without a working driver.
      type: list
      elements: dict
      returned: always
      contains:
        index:
          description: GPU index.
          type: int
          sample: 0
        name:
          description: Product name.
          type: str
          sample: NVIDIA H100 80GB HBM3
        uuid:
          description: GPU UUID.
          type: str
          sample: GPU-6a2c1e7b-0f4d-3b8a-9c5e-1d7f2a4b6c80
        memory_total_mib:
          description: Total framebuffer memory in MiB.
          type: int
          sample: 81559
        memory_used_mib:
          description: Used framebuffer memory in MiB.
          type: int
          sample: 0
        driver_version:
          description: Driver version.
          type: str
          sample: 550.54.15
        mig_mode:
          description: Current MIG mode as printed (V(Enabled) or V(Disabled)); V(null) on GPUs without MIG.
          type: str
          sample: Disabled
        mig_enabled:
          description: Whether MIG is on; V(null) on GPUs without MIG support.
          type: bool
          sample: false
        temperature_c:
          description: GPU core temperature in degrees Celsius.
          type: int
          sample: 33
        ecc_errors_uncorrected_volatile:
          description: Uncorrected ECC errors since the driver loaded; V(null) where ECC is off or unsupported.
          type: int
          sample: 0
        pci_bus_id:
          description: PCI bus id as C(nvidia-smi) prints it.
          type: str
          sample: "00000000:18:00.0"
        pci_address:
          description: The same address in sysfs form, to match RV(accelerators.nvidia_pci_devices[].address).
          type: str
          sample: "0000:18:00.0"
        mig_devices:
          description:
            - The GPU's MIG devices from C(nvidia-smi -L), which is run only when a GPU has MIG on.
              Empty on GPUs with MIG off or without MIG.
          type: list
          elements: dict
          sample:
            - profile: 1g.10gb
              device: 0
              uuid: MIG-fb42055e-9e53-5764-9278-438605a3014c
    nvidia_pci_devices:
      description:
        - NVIDIA devices of PCI class 0x03 (VGA or 3D controller) under C(/sys/bus/pci/devices),
          found without the driver.
      type: list
      elements: dict
      returned: always
      contains:
        address:
          description: PCI address (sysfs device name).
          type: str
          sample: "0000:18:00.0"
        device_id:
          description: PCI device id.
          type: str
          sample: "0x2330"
        class:
          description: PCI class code.
          type: str
          sample: "0x030200"
        driver:
          description: Kernel driver bound to the device (V(nvidia), V(nouveau), V(vfio-pci)); V(null) when none.
          type: str
          sample: nvidia
        numa_node:
          description: NUMA node of the device; V(null) when the kernel does not say.
          type: int
          sample: 0
    cpu:
      description: CPU summary.
      type: dict
      returned: always
      contains:
        model_name:
          description: CPU model name; V(null) when C(/proc/cpuinfo) does not give one.
          type: str
          sample: Intel(R) Xeon(R) Platinum 8480+
        logical_cores:
          description: Logical CPUs (hardware threads) in C(/proc/cpuinfo).
          type: int
          sample: 224
        physical_cores:
          description:
            - Distinct (C(physical id), C(core id)) pairs; the logical count where the kernel does not print them.
          type: int
          sample: 112
        sockets:
          description: Distinct C(physical id) values; V(1) where the kernel does not print them.
          type: int
          sample: 2
        numa_nodes:
          description: Number of C(/sys/devices/system/node/node*) entries; V(null) on kernels without NUMA.
          type: int
          sample: 2
        numa:
          description:
            - Each NUMA node with its CPUs (from its C(cpulist)) and its memory (from its C(meminfo)), in node
              order. Empty on kernels without NUMA.
          type: list
          elements: dict
          sample:
            - node: 0
              cpus: [0, 1, 2, 3]
              cpulist: "0-3"
              memory_total_mib: 257671
        flags:
          description:
            - For each inference-relevant CPU flag (V(avx), V(avx2), V(avx512f), V(avx512_bf16), V(avx512_vnni),
              V(amx_tile), V(amx_bf16), V(amx_int8), V(f16c), V(fma)), whether the CPU has it.
          type: dict
          sample:
            avx: true
            avx2: true
            avx512f: true
            avx512_bf16: true
            avx512_vnni: true
            amx_tile: true
            amx_bf16: true
            amx_int8: true
            f16c: true
            fma: true
    memory_total_mib:
      description: C(MemTotal) of C(/proc/meminfo) in MiB; V(null) when it cannot be read.
      type: int
      returned: always
      sample: 515342
"""

import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlfleet.fleet.plugins.module_utils.accelerator import (
    GPU_QUERY_ARGS,
    LIST_ARGS,
    AcceleratorParseError,
    CommandTimeout,
    count_numa_nodes,
    describe_nvidia_smi_failure,
    parse_cpuinfo,
    parse_cuda_version,
    parse_driver_version,
    parse_gpu_csv,
    parse_gpu_list,
    parse_memtotal_mib,
    run_with_timeout,
    scan_numa_nodes,
    scan_nvidia_pci_devices,
)


def _find_nvidia_smi(module: AnsibleModule) -> str | None:
    path = module.params["nvidia_smi_path"]
    if path:
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return module.get_bin_path("nvidia-smi")


def _gpu_facts(module: AnsibleModule, nvidia_smi: str, timeout: int) -> dict[str, Any]:
    facts: dict[str, Any] = {"gpu_driver_error": None, "driver_version": None, "cuda_version": None, "gpus": []}
    try:
        rc, out, err = run_with_timeout(module, [nvidia_smi, *GPU_QUERY_ARGS], timeout)
        if rc != 0:
            facts["gpu_driver_error"] = describe_nvidia_smi_failure(rc, out, err)
            return facts
        try:
            facts["gpus"] = parse_gpu_csv(out)
        except AcceleratorParseError as exc:
            facts["gpu_driver_error"] = f"could not parse nvidia-smi output: {exc}"
            return facts
        for gpu in facts["gpus"]:
            gpu["mig_devices"] = []

        # MIG devices (profile and UUID, what a container is pinned to) only where MIG is on.
        if any(gpu["mig_enabled"] for gpu in facts["gpus"]):
            rc, out, err = run_with_timeout(module, [nvidia_smi, *LIST_ARGS], timeout)
            if rc != 0:
                facts["gpu_driver_error"] = "listing MIG devices: " + describe_nvidia_smi_failure(rc, out, err)
                return facts
            try:
                listed = parse_gpu_list(out)
            except AcceleratorParseError as exc:
                facts["gpu_driver_error"] = f"could not parse nvidia-smi -L output: {exc}"
                return facts
            for gpu in facts["gpus"]:
                gpu["mig_devices"] = listed.get(gpu["index"], [])

        # CUDA version: `nvidia-smi --version` on newer drivers, else the banner of plain `nvidia-smi`.
        rc, out, _err = run_with_timeout(module, [nvidia_smi, "--version"], timeout)
        version_text = out if rc == 0 else ""
        cuda = parse_cuda_version(version_text)
        if cuda is None:
            rc, out, _err = run_with_timeout(module, [nvidia_smi], timeout)
            if rc == 0:
                version_text = out
                cuda = parse_cuda_version(out)
        facts["cuda_version"] = cuda
    except CommandTimeout as exc:
        facts["gpu_driver_error"] = str(exc)
        return facts
    except OSError as exc:
        facts["gpu_driver_error"] = f"could not run {nvidia_smi}: {exc}"
        return facts

    versions = [gpu["driver_version"] for gpu in facts["gpus"] if gpu["driver_version"]]
    facts["driver_version"] = versions[0] if versions else parse_driver_version(version_text)
    return facts


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            nvidia_smi_path=dict(type="path"),
            timeout=dict(type="int", default=30),
            sysfs_root=dict(type="path", default="/sys"),
            proc_root=dict(type="path", default="/proc"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    timeout = params["timeout"]
    if timeout <= 0:
        module.fail_json(msg=f"timeout must be a positive number of seconds, got {timeout}")
    for name in ("sysfs_root", "proc_root"):
        if not os.path.isdir(params[name]):
            module.fail_json(msg=f"{name} must be an existing directory, got {params[name]!r}")

    cpuinfo_path = os.path.join(params["proc_root"], "cpuinfo")
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as handle:
            cpuinfo = handle.read()
    except OSError as exc:
        module.fail_json(msg=f"cannot read {cpuinfo_path}: {exc}")

    cpu = parse_cpuinfo(cpuinfo)
    cpu["numa_nodes"] = count_numa_nodes(params["sysfs_root"])
    cpu["numa"] = scan_numa_nodes(params["sysfs_root"])
    try:
        with open(os.path.join(params["proc_root"], "meminfo"), encoding="utf-8", errors="replace") as handle:
            memory_total_mib = parse_memtotal_mib(handle.read())
    except OSError:
        memory_total_mib = None

    nvidia_smi = _find_nvidia_smi(module)
    if nvidia_smi:
        gpu = _gpu_facts(module, nvidia_smi, timeout)
    else:
        gpu = {"gpu_driver_error": None, "driver_version": None, "cuda_version": None, "gpus": []}

    accelerators: dict[str, Any] = {
        "nvidia_smi_found": nvidia_smi is not None,
        "nvidia_smi_path": nvidia_smi,
        "gpu_driver_error": gpu["gpu_driver_error"],
        "driver_version": gpu["driver_version"],
        "cuda_version": gpu["cuda_version"],
        "gpu_count": len(gpu["gpus"]),
        "gpus": gpu["gpus"],
        "nvidia_pci_devices": scan_nvidia_pci_devices(params["sysfs_root"]),
        "cpu": cpu,
        "memory_total_mib": memory_total_mib,
    }
    module.exit_json(changed=False, accelerators=accelerators, ansible_facts={"accelerators": accelerators})


if __name__ == "__main__":
    main()
