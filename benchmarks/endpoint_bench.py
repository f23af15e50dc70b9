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
Arms alternate (A, B, A, B, ...) for --rounds rounds; the medians of the rounds are reported.
The two extra containers are removed at the end.
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
BENCH_PORTS = {"hardened": 18081, "plain": 18082}


def load(lab: Lab, on: str, host: str, port: int, connections: int, seconds: float) -> dict:
    args = shlex.join(
        ["--host", host, "--port", str(port), "--connections", str(connections), "--seconds", str(seconds)]
    )
    res = lab.ssh(on, f"python3 - {args}", input_text=CLIENT)
    if res.returncode != 0:
        raise SystemExit(f"load client on {on} failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_containers(lab: Lab) -> None:
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
    hardening = [
        "--read-only",
        *(f"--tmpfs={path}:{opts}" for path, opts in (host.get("Tmpfs") or {}).items()),
        *(f"--cap-drop={c}" for c in host.get("CapDrop") or []),
        *(f"--security-opt={o}" for o in host.get("SecurityOpt") or []),
        f"--pids-limit={host['PidsLimit']}" if host.get("PidsLimit") else "",
    ]
    for arm, port in BENCH_PORTS.items():
        flags = [f for f in common + (hardening if arm == "hardened" else []) if f]
        cmd = [
            "docker",
            "run",
            f"--name=bench-iris-{arm}",
            f"--publish=127.0.0.1:{port}:8080",
            *flags,
            info["Image"],
            *cfg["Cmd"],
        ]
        lab.sh("cpu-2", f"docker rm -f bench-iris-{arm} >/dev/null 2>&1; {shlex.join(cmd)}", become=True)
    probes = [
        f"python3 -c \"import urllib.request;urllib.request.urlopen('http://127.0.0.1:{port}/v2/health/ready')\""
        for port in BENCH_PORTS.values()
    ]
    if not wait_for(lambda: all(lab.sh("cpu-2", p, check=False).returncode == 0 for p in probes), 120):
        raise SystemExit(f"bench containers on ports {sorted(BENCH_PORTS.values())} not ready within 120 s")


def remove_bench_containers(lab: Lab) -> None:
    names = " ".join(f"bench-iris-{arm}" for arm in BENCH_PORTS)
    lab.sh("cpu-2", f"docker rm -f {names} >/dev/null 2>&1 || true", become=True)


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
    args = parser.parse_args(argv)
    lab = load_inventory()
    lb, direct = lab.hosts["lb-1"], lab.hosts["cpu-1"]

    arms = {
        ("lb", 1): ("lb-1", lb, 8000, 1),
        ("direct", 1): ("lb-1", direct, 8080, 1),
        ("lb", 8): ("lb-1", lb, 8000, 8),
        ("direct", 8): ("lb-1", direct, 8080, 8),
        ("hardened", 4): ("cpu-2", "127.0.0.1", BENCH_PORTS["hardened"], 4),
        ("plain", 4): ("cpu-2", "127.0.0.1", BENCH_PORTS["plain"], 4),
    }
    results: dict[tuple[str, int], list[dict]] = {k: [] for k in arms}
    bench_containers(lab)
    try:
        for rnd in range(args.rounds):
            # Alternate the order each round so that neither arm always runs first.
            pairs = [(("lb", 1), ("direct", 1)), (("lb", 8), ("direct", 8)), (("hardened", 4), ("plain", 4))]
            for a, b in pairs:
                for key in (a, b) if rnd % 2 == 0 else (b, a):
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
    runs = {f"{a}/c{c}": r for (a, c), r in results.items()}
    write_results(results_folder(args.out, "endpoint-"), {"runs": runs, "medians": rows}, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
