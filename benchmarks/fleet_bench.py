"""No-change converge and drift runs under three Ansible settings, side by side, on the lab.

    python benchmarks/fleet_bench.py --reps 3 --out artifacts/bench

Profiles (each a generated ansible.cfg, so nothing else differs):
  stock    only the paths the project needs to run (roles, plugins, inventory); every setting at
           Ansible's default (forks 5, no pipelining, implicit fact gathering, ...)
  project  the repository's ansible.cfg
  mitogen  the repository's ansible.cfg plus the Mitogen strategy (mitogen_linear)

Workloads: ``converge`` = ansible-playbook playbooks/site.yml on an already converged lab (must
report changed=0), ``drift`` = python -m mlfleet.drift (check + diff through ansible-runner).
Profiles alternate inside each repetition (stock, project, mitogen, stock, ...) so that a noisy
machine slows them alike and the ratios hold.

Per run: wall seconds, control-node CPU seconds (user+sys of the ansible process tree, from
wait4), peak RSS of the largest control-node process, and lab-host CPU seconds (cgroup CPU time of
every lab container, less the idle rate measured before the runs).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchkit import ROOT, recap, results_folder, write_results

sys.path.insert(0, str(ROOT / "tools"))
from ansible_cfgs import mitogen_config, project_config  # noqa: E402 - tools/ is not a package

BIN = Path(sys.executable).parent
LAB_LABEL = "mlfleet.lab=mlfleet-lab"

# The settings a project cannot run without (its inventory and where its collection is); nothing that tunes.
STOCK_CFG = """[defaults]
inventory = {root}/inventories/lab
collections_path = {root}/collections
inject_facts_as_vars = False
"""


@dataclass
class Sample:
    workload: str
    profile: str
    rep: int
    wall_s: float
    control_cpu_s: float
    peak_rss_mib: float
    host_cpu_s: float
    ok: bool
    note: str = ""


def write_configs(folder: Path, profiles: list[str]) -> dict[str, Path]:
    cfgs: dict[str, Path] = {}
    for name in profiles:
        if name == "stock":
            text = STOCK_CFG.format(root=ROOT)
        elif name == "project":
            text = project_config(ROOT)
        elif name == "mitogen":
            text = mitogen_config(ROOT)
        else:
            raise SystemExit(f"unknown profile {name!r}: use stock, project, mitogen")
        path = folder / f"{name}.cfg"
        path.write_text(text)
        cfgs[name] = path
    return cfgs


# --- lab-host CPU from the containers' cgroups ----------------------------------------------------


def lab_containers() -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-q", "--no-trunc", "--filter", f"label={LAB_LABEL}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def container_cpu_ns(cid: str) -> int:
    """CPU time of the container's whole cgroup (cgroup v1 cpuacct or v2 cpu.stat)."""
    for path in (
        Path(f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage"),
        Path(f"/sys/fs/cgroup/cpu,cpuacct/docker/{cid}/cpuacct.usage"),
    ):
        if path.exists():
            return int(path.read_text())
    for path in (
        Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat"),
        Path(f"/sys/fs/cgroup/docker/{cid}/cpu.stat"),
    ):
        if path.exists():
            usage = re.search(r"^usage_usec (\d+)", path.read_text(), re.M)
            return int(usage.group(1)) * 1000 if usage else 0
    raise SystemExit(f"no cgroup CPU accounting found for container {cid[:12]}")


def hosts_cpu_ns(cids: list[str]) -> int:
    return sum(container_cpu_ns(c) for c in cids)


# --- one measured run --------------------------------------------------------------------------------


def measure(
    cmd: list[str], env: dict[str, str], cids: list[str], idle_rate: float, workload: str, profile: str, rep: int
) -> tuple[Sample, str]:
    before = hosts_cpu_ns(cids)
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - start
        out.seek(0)
        output = out.read()
    host_cpu = (hosts_cpu_ns(cids) - before) / 1e9 - idle_rate * wall
    sample = Sample(
        workload=workload,
        profile=profile,
        rep=rep,
        wall_s=round(wall, 2),
        control_cpu_s=round(usage.ru_utime + usage.ru_stime, 2),
        peak_rss_mib=round(usage.ru_maxrss / 1024, 1),
        host_cpu_s=round(host_cpu, 2),
        ok=proc.returncode == 0,
        note="" if proc.returncode == 0 else f"rc={proc.returncode}",
    )
    return sample, output


def workload_cmd(workload: str, scratch: Path) -> list[str]:
    if workload == "converge":
        return [str(BIN / "ansible-playbook"), "playbooks/site.yml"]
    if workload == "drift":
        return [
            sys.executable,
            "-m",
            "mlfleet.drift",
            "-q",
            "--no-textfile",
            "--artifacts-dir",
            str(scratch / "drift-reports"),
        ]
    raise SystemExit(f"unknown workload {workload!r}: use converge, drift")


def check_output(workload: str, sample: Sample, output: str) -> None:
    if workload == "converge" and sample.ok:
        changed = {h: c["changed"] for h, c in recap(output).items() if c["changed"]}
        if changed:
            sample.ok, sample.note = False, f"not a no-change run: changed {changed}"
    if not sample.ok:
        sample.note = sample.note or "failed"
        print(output[-3000:], file=sys.stderr)


def summarize(samples: list[Sample]) -> list[dict]:
    rows = []
    keys = sorted({(s.workload, s.profile) for s in samples}, key=lambda k: (k[0], PROFILE_ORDER.index(k[1])))
    stock = {}
    for workload, profile in keys:
        runs = [s for s in samples if (s.workload, s.profile) == (workload, profile) and s.ok]
        if not runs:
            rows.append({"workload": workload, "profile": profile, "runs": 0})
            continue
        walls = [s.wall_s for s in runs]
        row = {
            "workload": workload,
            "profile": profile,
            "runs": len(runs),
            "wall_median_s": round(statistics.median(walls), 1),
            "wall_min_s": min(walls),
            "wall_max_s": max(walls),
            "control_cpu_s": round(statistics.median(s.control_cpu_s for s in runs), 1),
            "host_cpu_s": round(statistics.median(s.host_cpu_s for s in runs), 1),
            "peak_rss_mib": max(s.peak_rss_mib for s in runs),
        }
        if profile == "stock":
            stock[workload] = row["wall_median_s"]
        if workload in stock:
            row["speedup_vs_stock"] = round(stock[workload] / row["wall_median_s"], 2)
        rows.append(row)
    return rows


def markdown(rows: list[dict], hosts: int) -> str:
    lines = [
        f"| Workload (N={hosts}) | Settings | Runs | Wall median (min–max) | vs stock | Control CPU | "
        "Host CPU | Peak control RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if not r["runs"]:
            lines.append(f"| {r['workload']} | {r['profile']} | 0 | failed | | | | |")
            continue
        lines.append(
            f"| {r['workload']} | {r['profile']} | {r['runs']} | {r['wall_median_s']} s "
            f"({r['wall_min_s']}–{r['wall_max_s']}) | {r.get('speedup_vs_stock', '—')}× | "
            f"{r['control_cpu_s']} s | {r['host_cpu_s']} s | {r['peak_rss_mib']} MiB |"
        )
    return "\n".join(lines) + "\n"


PROFILE_ORDER = ["stock", "project", "mitogen"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--profiles", default=",".join(PROFILE_ORDER))
    parser.add_argument("--workloads", default="converge,drift")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="idle window for the background rate")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench")
    args = parser.parse_args(argv)
    profiles = [p for p in PROFILE_ORDER if p in args.profiles.split(",")]
    workloads = args.workloads.split(",")

    cids = lab_containers()
    if not cids:
        raise SystemExit("no lab is running: make lab-up converge first")
    folder = results_folder(args.out)
    cfgs = write_configs(folder, profiles)

    before = hosts_cpu_ns(cids)
    time.sleep(args.idle_seconds)
    idle_rate = (hosts_cpu_ns(cids) - before) / 1e9 / args.idle_seconds
    print(f"{len(cids)} lab hosts; idle background {idle_rate:.2f} CPU-s/s", flush=True)

    samples: list[Sample] = []
    for workload in workloads:
        for rep in range(1, args.reps + 1):
            for profile in profiles:
                env = dict(os.environ, ANSIBLE_CONFIG=str(cfgs[profile]), ANSIBLE_NOCOLOR="1")
                env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
                sample, output = measure(workload_cmd(workload, folder), env, cids, idle_rate, workload, profile, rep)
                check_output(workload, sample, output)
                (folder / f"{workload}-{profile}-{rep}.log").write_text(output)
                samples.append(sample)
                print(json.dumps(asdict(sample)), flush=True)

    rows = summarize(samples)
    result = {
        "hosts": len(cids),
        "idle_host_cpu_per_s": round(idle_rate, 3),
        "machine": machine(),
        "samples": [asdict(s) for s in samples],
        "summary": rows,
    }
    write_results(folder, result, markdown(rows, len(cids)))
    return 0 if all(s.ok for s in samples) else 1


def machine() -> dict[str, str]:
    cpu = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    mem = re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M)
    versions = subprocess.run([str(BIN / "ansible"), "--version"], capture_output=True, text=True).stdout
    return {
        "cpu": cpu.group(1) if cpu else "?",
        "cores": str(os.cpu_count()),
        "memory_gib": f"{int(mem.group(1)) / 1024**2:.0f}" if mem else "?",
        "ansible": versions.splitlines()[0] if versions else "?",
        "python": sys.version.split()[0],
    }


if __name__ == "__main__":
    sys.exit(main())
