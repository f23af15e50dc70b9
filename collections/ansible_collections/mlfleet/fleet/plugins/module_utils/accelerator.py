# Copyright: (c) mlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared code for the ``accelerator_facts`` module: parse nvidia-smi, /proc/cpuinfo and sysfs.

The parsers are pure functions over strings so that unit tests can feed them recorded output.
The few functions that read the filesystem (``scan_nvidia_pci_devices``, ``count_numa_nodes``)
take the sysfs root as an argument, so tests can point them at a fake tree.

Runs on the managed host: Python standard library only.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

# Order matters: nvidia-smi prints the columns in the order they were queried.
GPU_QUERY_FIELDS: tuple[str, ...] = (
    "index",
    "name",
    "uuid",
    "memory.total",
    "memory.used",
    "driver_version",
    "mig.mode.current",
    "temperature.gpu",
    "ecc.errors.uncorrected.volatile.total",
    "pci.bus_id",
)

# The arguments after the nvidia-smi executable, for the per-GPU query.
GPU_QUERY_ARGS: tuple[str, ...] = (
    "--query-gpu=" + ",".join(GPU_QUERY_FIELDS),
    "--format=csv,noheader,nounits",
)

# CPU flags that matter for CPU inference (oneDNN, llama.cpp, ONNX Runtime, OpenVINO kernels).
INFERENCE_CPU_FLAGS: tuple[str, ...] = (
    "avx",
    "avx2",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "f16c",
    "fma",
)

NVIDIA_PCI_VENDOR = 0x10DE
# PCI base class 0x03: display controller (0x0300 VGA, 0x0302 3D controller, the class of data-center GPUs).
PCI_CLASS_DISPLAY = 0x03

# nvidia-smi writes these (bracketed in CSV output, bare in some older drivers) instead of a value.
_PLACEHOLDERS = frozenset(
    {
        "n/a",
        "not supported",
        "unknown error",
        "insufficient permissions",
        "not found",
        "gpu is lost",
        "requires pci device",
    }
)

_CUDA_VERSION_RE = re.compile(r"CUDA(?: UMD)? Version\s*:\s*([0-9]+(?:\.[0-9]+)*)")
_DRIVER_VERSION_RE = re.compile(r"(?:Driver|DRIVER|KMD) [Vv]ersion\s*:\s*([0-9]+(?:\.[0-9]+)*)")


class AcceleratorParseError(ValueError):
    """Output that does not have the shape we queried for (a different nvidia-smi, or not nvidia-smi at all)."""


def normalize_value(raw: str | None) -> str | None:
    """Strip a field; return None for empty fields and nvidia-smi placeholders such as ``[N/A]``."""
    if raw is None:
        return None
    value = raw.strip()
    if not value:
        return None
    bare = value[1:-1].strip() if value.startswith("[") and value.endswith("]") else value
    if bare.lower() in _PLACEHOLDERS:
        return None
    return value


def _to_int(raw: str | None) -> int | None:
    value = normalize_value(raw)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        try:
            return int(float(value))
        except ValueError:
            return None


def _mig_enabled(raw: str | None) -> bool | None:
    value = normalize_value(raw)
    if value is None:
        return None
    lowered = value.lower()
    if lowered == "enabled":
        return True
    if lowered == "disabled":
        return False
    return None


def pci_bus_id_to_sysfs(bus_id: str | None) -> str | None:
    """``00000000:18:00.0`` (nvidia-smi) -> ``0000:18:00.0`` (the name under /sys/bus/pci/devices)."""
    value = normalize_value(bus_id)
    if value is None:
        return None
    match = re.fullmatch(r"([0-9A-Fa-f]{4,8}):([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})\.([0-7])", value)
    if not match:
        return None
    domain, bus, device, function = match.groups()
    return f"{int(domain, 16):04x}:{bus.lower()}:{device.lower()}.{function}"


def parse_gpu_csv(text: str, fields: tuple[str, ...] = GPU_QUERY_FIELDS) -> list[dict[str, Any]]:
    """Parse ``nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits`` output.

    Returns one dict per GPU, in the order nvidia-smi printed them. Placeholders become None.
    Raises AcceleratorParseError when a line does not have one column per queried field.
    """
    gpus: list[dict[str, Any]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        columns = [column.strip() for column in line.split(",")]
        if len(columns) != len(fields):
            raise AcceleratorParseError(
                f"nvidia-smi output line {lineno} has {len(columns)} columns, expected {len(fields)} "
                f"({', '.join(fields)}): {line!r}"
            )
        row = dict(zip(fields, columns, strict=True))
        gpus.append(
            {
                "index": _to_int(row.get("index")),
                "name": normalize_value(row.get("name")),
                "uuid": normalize_value(row.get("uuid")),
                "memory_total_mib": _to_int(row.get("memory.total")),
                "memory_used_mib": _to_int(row.get("memory.used")),
                "driver_version": normalize_value(row.get("driver_version")),
                "mig_mode": normalize_value(row.get("mig.mode.current")),
                "mig_enabled": _mig_enabled(row.get("mig.mode.current")),
                "temperature_c": _to_int(row.get("temperature.gpu")),
                "ecc_errors_uncorrected_volatile": _to_int(row.get("ecc.errors.uncorrected.volatile.total")),
                "pci_bus_id": normalize_value(row.get("pci.bus_id")),
                "pci_address": pci_bus_id_to_sysfs(row.get("pci.bus_id")),
            }
        )
    return gpus


def parse_cuda_version(text: str) -> str | None:
    """CUDA version from ``nvidia-smi --version`` (``CUDA Version        : 12.4``) or the ``nvidia-smi`` banner.

    The banner reads ``| NVIDIA-SMI 550.54.15   Driver Version: 550.54.15   CUDA Version: 12.4 |``.
    This is the highest CUDA version the installed driver supports, not an installed toolkit.
    """
    match = _CUDA_VERSION_RE.search(text or "")
    return match.group(1) if match else None


def parse_driver_version(text: str) -> str | None:
    """Driver version from ``nvidia-smi --version`` or the banner; None when absent."""
    match = _DRIVER_VERSION_RE.search(text or "")
    return match.group(1) if match else None


def describe_nvidia_smi_failure(rc: int, stdout: str, stderr: str) -> str:
    """One line for ``gpu_driver_error`` from a failed nvidia-smi run (the text it printed, and its exit code).

    nvidia-smi prints its errors on stdout (``NVIDIA-SMI has failed because it couldn't communicate with the
    NVIDIA driver. ...``, exit code 9), so both streams are considered.
    """
    lines = [line.strip() for line in (stdout or "").splitlines() + (stderr or "").splitlines()]
    message = " ".join(line for line in lines if line)
    if not message:
        message = "nvidia-smi printed nothing"
    return f"{message} (nvidia-smi exit code {rc})"


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Summarize /proc/cpuinfo: logical and physical cores, sockets, model name and inference flags.

    Physical cores are distinct (``physical id``, ``core id``) pairs; sockets are distinct ``physical id``
    values. Where the kernel does not print those (some VMs, most ARM hosts), physical cores fall back to
    the logical count and sockets to 1 (None when no processor is listed at all).
    """
    processors: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in (text or "").splitlines():
        if not line.strip():
            if current:
                processors.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        current[key.strip()] = value.strip()
    if current:
        processors.append(current)

    # Blocks without "processor" (the trailing "Hardware"/"Revision" block on some ARM kernels) are not CPUs.
    cpus = [block for block in processors if "processor" in block]
    logical = len(cpus)

    sockets_seen = {cpu["physical id"] for cpu in cpus if "physical id" in cpu}
    cores_seen = {(cpu["physical id"], cpu["core id"]) for cpu in cpus if "physical id" in cpu and "core id" in cpu}

    model_name = None
    flags: set[str] = set()
    for cpu in cpus:
        model_name = model_name or cpu.get("model name") or cpu.get("Processor") or None
        flags.update((cpu.get("flags") or cpu.get("Features") or "").split())

    return {
        "logical_cores": logical,
        "physical_cores": len(cores_seen) if cores_seen else (logical or None),
        "sockets": len(sockets_seen) if sockets_seen else (1 if logical else None),
        "model_name": model_name,
        "flags": {flag: flag in flags for flag in INFERENCE_CPU_FLAGS},
    }


def parse_hex(text: str | None) -> int | None:
    """``0x10de\\n`` -> 0x10de; None when unreadable."""
    try:
        return int((text or "").strip(), 16)
    except ValueError:
        return None


def is_nvidia_display_device(vendor: int | None, pci_class: int | None) -> bool:
    """True for an NVIDIA device whose PCI class is a display controller (0x03xxxx: VGA or 3D)."""
    return vendor == NVIDIA_PCI_VENDOR and pci_class is not None and (pci_class >> 16) == PCI_CLASS_DISPLAY


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def scan_nvidia_pci_devices(sysfs_root: str) -> list[dict[str, Any]]:
    """NVIDIA display/3D devices under ``<sysfs_root>/bus/pci/devices``, whether or not a driver is bound.

    ``driver`` is the name of the bound kernel driver (``nvidia``, ``nouveau``, ``vfio-pci``) or None.
    """
    base = os.path.join(sysfs_root, "bus", "pci", "devices")
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    devices: list[dict[str, Any]] = []
    for name in names:
        path = os.path.join(base, name)
        vendor = parse_hex(_read(os.path.join(path, "vendor")))
        pci_class = parse_hex(_read(os.path.join(path, "class")))
        if not is_nvidia_display_device(vendor, pci_class):
            continue
        device_id = parse_hex(_read(os.path.join(path, "device")))
        driver_link = os.path.join(path, "driver")
        driver = os.path.basename(os.path.realpath(driver_link)) if os.path.islink(driver_link) else None
        numa = _read(os.path.join(path, "numa_node"))
        numa_node = int(numa.strip()) if numa and numa.strip().lstrip("-").isdigit() else None
        devices.append(
            {
                "address": name,
                "device_id": f"0x{device_id:04x}" if device_id is not None else None,
                "class": f"0x{pci_class:06x}" if pci_class is not None else None,
                "driver": driver,
                "numa_node": numa_node if numa_node is not None and numa_node >= 0 else None,
            }
        )
    return devices


def count_numa_nodes(sysfs_root: str) -> int | None:
    """Number of ``node<N>`` directories under ``<sysfs_root>/devices/system/node``; None when it is absent."""
    base = os.path.join(sysfs_root, "devices", "system", "node")
    try:
        names = os.listdir(base)
    except OSError:
        return None
    return sum(1 for name in names if re.fullmatch(r"node[0-9]+", name))


# `nvidia-smi -L`: one line per GPU, its MIG devices indented under it.
#   GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-8e3f1b6a-...)
#     MIG 1g.5gb      Device  0: (UUID: MIG-fb42055e-...)
_LIST_GPU_RE = re.compile(r"^GPU\s+(\d+):\s+(.*?)\s+\(UUID:\s*([^)\s]+)\)\s*$")
_LIST_MIG_RE = re.compile(r"^\s+MIG\s+(\S+)\s+Device\s+(\d+):\s+\(UUID:\s*([^)\s]+)\)\s*$")

# The arguments after the nvidia-smi executable, for the list of GPUs and their MIG devices.
LIST_ARGS: tuple[str, ...] = ("-L",)


def parse_gpu_list(text: str) -> dict[int, list[dict[str, Any]]]:
    """MIG devices per GPU index from ``nvidia-smi -L``: ``{0: [{"profile": "1g.5gb", "device": 0,
    "uuid": "MIG-..."}], 1: []}``. Every GPU line gets an entry, with or without MIG devices.

    Raises AcceleratorParseError on a MIG line before any GPU line, or on a non-empty line that is
    neither (a different nvidia-smi, or not nvidia-smi at all).
    """
    devices: dict[int, list[dict[str, Any]]] = {}
    current: int | None = None
    for lineno, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        gpu = _LIST_GPU_RE.match(line)
        if gpu:
            current = int(gpu.group(1))
            devices[current] = []
            continue
        mig = _LIST_MIG_RE.match(line)
        if mig and current is not None:
            devices[current].append({"profile": mig.group(1), "device": int(mig.group(2)), "uuid": mig.group(3)})
            continue
        raise AcceleratorParseError(f"nvidia-smi -L output line {lineno} is neither a GPU nor a MIG device: {line!r}")
    return devices


def parse_cpulist(text: str | None) -> list[int]:
    """A kernel CPU list (``0-3,8,10-11``, as in sysfs ``cpulist`` files) as sorted CPU numbers.

    Raises ValueError on anything else, so a bad ``cpuset`` in an inventory is refused, not guessed.
    """
    value = (text or "").strip()
    if not value:
        return []
    cpus: set[int] = set()
    for part in value.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise ValueError(f"{value!r} is not a CPU list like '0-3,8'")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise ValueError(f"{value!r}: the range {first}-{last} runs backwards")
        cpus.update(range(first, last + 1))
    return sorted(cpus)


def format_cpulist(cpus: list[int]) -> str:
    """Sorted CPU numbers as a kernel CPU list: [0, 1, 2, 3, 8] -> ``0-3,8`` (docker's ``--cpuset-cpus`` form)."""
    parts: list[str] = []
    ordered = sorted(set(cpus))
    start = prev = None
    for cpu in ordered:
        if start is None:
            start = prev = cpu
        elif cpu == prev + 1:
            prev = cpu
        else:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = cpu
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ",".join(parts)


_MEMTOTAL_RE = re.compile(r"MemTotal:\s*(\d+)\s*kB")


def parse_memtotal_mib(text: str | None) -> int | None:
    """``MemTotal`` of /proc/meminfo or of a NUMA node's meminfo (``Node 0 MemTotal: 263855100 kB``) in MiB."""
    match = _MEMTOTAL_RE.search(text or "")
    return int(match.group(1)) // 1024 if match else None


def scan_numa_nodes(sysfs_root: str) -> list[dict[str, Any]]:
    """Each ``node<N>`` under ``<sysfs_root>/devices/system/node``: its CPUs and memory, in node order."""
    base = os.path.join(sysfs_root, "devices", "system", "node")
    try:
        names = os.listdir(base)
    except OSError:
        return []
    nodes: list[dict[str, Any]] = []
    for name in sorted((n for n in names if re.fullmatch(r"node[0-9]+", n)), key=lambda n: int(n[4:])):
        try:
            cpus = parse_cpulist(_read(os.path.join(base, name, "cpulist")))
        except ValueError:
            cpus = []
        nodes.append(
            {
                "node": int(name[4:]),
                "cpus": cpus,
                "cpulist": format_cpulist(cpus),
                "memory_total_mib": parse_memtotal_mib(_read(os.path.join(base, name, "meminfo"))),
            }
        )
    return nodes


class CommandTimeout(Exception):
    """A command did not answer in time."""


def run_with_timeout(module: Any, argv: list[str], timeout: int) -> tuple[int, str, str]:
    """``module.run_command`` with a deadline: a watchdog kills the command once it passes (run_command
    has no timeout of its own). Raises CommandTimeout when it fired.

    A process that SIGKILL cannot end (a broken driver can leave nvidia-smi in uninterruptible sleep)
    still holds run_command; the nvidia_gpu role bounds its tasks with the task keyword ``timeout``.
    """
    fired = threading.Event()
    timers: list[threading.Timer] = []

    def watch(proc: Any) -> None:
        def expire() -> None:
            fired.set()
            proc.kill()

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        timers.append(timer)

    try:
        rc, out, err = module.run_command(
            argv, environ_update={"LC_ALL": "C", "LANG": "C"}, before_communicate_callback=watch
        )
    finally:
        for timer in timers:
            timer.cancel()
    if fired.is_set():
        raise CommandTimeout(f"nvidia-smi did not answer within {timeout} seconds ({' '.join(argv)})")
    return rc, out, err
