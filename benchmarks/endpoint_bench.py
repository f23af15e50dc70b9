"""Model endpoint figures on a converged lab: through the load balancer vs directly, and the
container hardening flags on vs off, in one run.

    python benchmarks/endpoint_bench.py --seconds 20 --rounds 2 --out artifacts/bench

Arms (benchmarks/loadclient.py, run on a lab host as the deploy user):
  lb / direct       the client on lb-1 sends to HAProxy (lb-1:8000, which spreads over the four
                    inference hosts) and straight to cpu-1:8080, one connection (latency: the LB's
                    own cost per request) and 8 connections (throughput)
  hardened / plain  two extra copies of the model container on cpu-2, bound to 127.0.0.1, with the
                    same image, command, user and resource limits (1 CPU, 1 GiB) as the deployed
                    one; "hardened" adds the security flags the model_server role sets (read-only
                    root + tmpfs /tmp, cap_drop ALL, no-new-privileges, pids limit), "plain" none.
                    The client runs on cpu-2 with 4 connections.
Diagnostics (off by default, each adds arms to the same run):
  --per-backend     the client on lb-1 also sends straight to each other backend of the LB (one
                    connection), so the LB's cost is also given against the backends it spreads over
  --per-flag        one more container per hardening flag, with only that flag on
Within each group the arms rotate their order every round (A B C, B C A, ...), for --rounds
rounds; the medians of the rounds are reported. The extra containers are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

from benchkit import ROOT, Lab, load_inventory, results_folder, wait_for, write_results

CLIENT = (Path(__file__).parent / "loadclient.py").read_text()
FIRST_BENCH_PORT = 18081
FLAGS = ("read-only", "cap-drop", "no-new-privileges", "pids-limit")


def load(lab: Lab, on: str, host: str, port: int, connections: int, seconds: float) -> dict:
    args = shlex.join(
        ["--host", host, "--port", str(port), "--connections", str(connections), "--seconds", str(seconds)]
    )
    res = lab.ssh(on, f"python3 - {args}", input_text=CLIENT)
    if res.returncode != 0:
        raise SystemExit(f"load client on {on} failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def hardening_flags(host: dict) -> dict[str, list[str]]:
    """The deployed container's security flags (docker inspect's HostConfig), one entry per flag."""
    return {
        "read-only": (["--read-only"] if host.get("ReadonlyRootfs") else [])
        + [f"--tmpfs={path}:{opts}" for path, opts in (host.get("Tmpfs") or {}).items()],
        "cap-drop": [f"--cap-drop={c}" for c in host.get("CapDrop") or []],
        "no-new-privileges": [f"--security-opt={o}" for o in host.get("SecurityOpt") or []],
        "pids-limit": [f"--pids-limit={host['PidsLimit']}"] if host.get("PidsLimit") else [],
    }


def container_arms(host: dict, per_flag: bool) -> dict[str, list[str]]:
    """Arm name -> the security flags of its container: none, all, and (per_flag) each one alone."""
    flags = hardening_flags(host)
    arms = {"hardened": [f for name in FLAGS for f in flags[name]], "plain": []}
    if per_flag:
        arms.update({f"only-{name}": flags[name] for name in FLAGS})
    return arms


def rotated(items: list, rnd: int) -> list:
    """The order of a group's arms in round rnd: each arm goes first in turn."""
    k = rnd % len(items)
    return items[k:] + items[:k]


def bench_containers(lab: Lab, per_flag: bool) -> dict[str, int]:
    """Start one copy of cpu-2's model container per arm, bound to 127.0.0.1; arm -> port."""
    info = json.loads(lab.sh("cpu-2", "docker inspect model-iris", become=True).stdout)[0]
    cfg, host = info["Config"], info["HostConfig"]
    env = [f"--env={e}" for e in cfg["Env"] if not e.startswith(("PATH=", "container="))]
    common = [
        "--detach",
        f"--user={cfg['User']}" if cfg.get("User") else "",
        f"--cpus={host['NanoCpus'] / 1e9:g}",
        f"--memory={host['Memory']}",
        *env,
    ]
    ports = {}
    for i, (arm, flags) in enumerate(container_arms(host, per_flag).items()):
        ports[arm] = port = FIRST_BENCH_PORT + i
        cmd = [
            "docker",
            "run",
            f"--name=bench-iris-{arm}",
            "--label=io.mlfleet.bench=endpoint",
            f"--publish=127.0.0.1:{port}:8080",
            *(f for f in common + flags if f),
            info["Image"],
            *cfg["Cmd"],
        ]
        lab.sh("cpu-2", f"docker rm -f bench-iris-{arm} >/dev/null 2>&1; {shlex.join(cmd)}", become=True)
    probes = [
        f"python3 -c \"import urllib.request;urllib.request.urlopen('http://127.0.0.1:{port}/v2/health/ready')\""
        for port in ports.values()
    ]
    if not wait_for(lambda: all(lab.sh("cpu-2", p, check=False).returncode == 0 for p in probes), 180):
        raise SystemExit(f"bench containers on ports {sorted(ports.values())} not ready within 180 s")
    return ports


def remove_bench_containers(lab: Lab) -> None:
    ids = "$(docker ps -aq --filter label=io.mlfleet.bench=endpoint)"
    lab.sh("cpu-2", f'ids={ids}; [ -z "$ids" ] || docker rm -f $ids >/dev/null', become=True)


def median_row(runs: list[dict]) -> dict:
    keys = ("rps", "p50_ms", "p95_ms", "p99_ms", "client_cpu_s")
    row = {k: round(statistics.median(r[k] for r in runs), 3) for k in keys}
    row.update(requests=sum(r["requests"] for r in runs), errors=sum(r["errors"] for r in runs), rounds=len(runs))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench")
    parser.add_argument("--per-backend", action="store_true", help="also direct to each backend of the LB")
    parser.add_argument("--per-flag", action="store_true", help="also one container per hardening flag alone")
    args = parser.parse_args(argv)
    lab = load_inventory()
    lb, direct = lab.hosts["lb-1"], lab.hosts["cpu-1"]

    groups: list[list[tuple[str, int]]] = [[("lb", 1), ("direct", 1)], [("lb", 8), ("direct", 8)]]
    arms = {
        ("lb", 1): ("lb-1", lb, 8000, 1),
        ("direct", 1): ("lb-1", direct, 8080, 1),
        ("lb", 8): ("lb-1", lb, 8000, 8),
        ("direct", 8): ("lb-1", direct, 8080, 8),
    }
    if args.per_backend:
        for name in lab.groups["inference"]:
            if name != "cpu-1":
                arms[(f"direct-{name}", 1)] = ("lb-1", lab.hosts[name], 8080, 1)
                groups[0].append((f"direct-{name}", 1))
    results: dict[tuple[str, int], list[dict]] = {}
    try:
        ports = bench_containers(lab, args.per_flag)
        for arm, port in ports.items():
            arms[(arm, 4)] = ("cpu-2", "127.0.0.1", port, 4)
        groups.append([(arm, 4) for arm in ports])
        results = {k: [] for k in arms}
        for rnd in range(args.rounds):
            for group in groups:
                for key in rotated(group, rnd):
                    on, host, port, conns = arms[key]
                    res = load(lab, on, host, port, conns, args.seconds)
                    results[key].append(res)
                    print(json.dumps({"arm": key[0], "round": rnd + 1, **res}), flush=True)
    finally:
        remove_bench_containers(lab)

    rows = {f"{arm}/c{c}": median_row(runs) for (arm, c), runs in results.items()}
    lines = [
        "| Arm | Connections | Throughput (req/s) | p50 | p95 | p99 | Errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for (arm, c), _ in results.items():
        r = rows[f"{arm}/c{c}"]
        lines.append(
            f"| {arm} | {c} | {r['rps']} | {r['p50_ms']} ms | {r['p95_ms']} ms | {r['p99_ms']} ms | {r['errors']} |"
        )
    lb_overhead = rows["lb/c1"]["p50_ms"] - rows["direct/c1"]["p50_ms"]
    hardening_cost = 1 - rows["hardened/c4"]["rps"] / rows["plain/c4"]["rps"]
    lines += [
        "",
        f"- LB overhead at p50 (one connection): {lb_overhead:+.2f} ms (goal ≤ 1 ms)",
        f"- Throughput cost of the hardening flags: {hardening_cost * 100:+.1f} % (goal ≤ 5 %)",
    ]
    backends = [r for key, r in rows.items() if key == "direct/c1" or key.startswith("direct-")]
    if len(backends) > 1:
        mean_p50 = statistics.mean(r["p50_ms"] for r in backends)
        lines.append(
            f"- LB overhead at p50 against the mean of its {len(backends)} backends' direct p50 "
            f"({mean_p50:.2f} ms): {rows['lb/c1']['p50_ms'] - mean_p50:+.2f} ms"
        )
    for name in FLAGS:
        if f"only-{name}/c4" in rows:
            cost = 1 - rows[f"only-{name}/c4"]["rps"] / rows["plain/c4"]["rps"]
            lines.append(f"- Throughput cost of {name} alone: {cost * 100:+.1f} %")
    runs = {f"{a}/c{c}": r for (a, c), r in results.items()}
    write_results(results_folder(args.out, "endpoint-"), {"runs": runs, "medians": rows}, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
