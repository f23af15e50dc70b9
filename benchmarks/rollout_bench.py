"""Rollout timings of the lab fleet from the deployment ledger.

    python benchmarks/rollout_bench.py --away v1 --back v2

Rolls the model out to ``--away`` and back to ``--back`` (the inventory's pin) with
playbooks/rollout.yml, then reads the ledger lines those two rollouts added. Per host the ledger
holds how long each phase took (pull, drain, start, gate, enable); the overhead reported is what a
host spends out of the load balancer's rotation beyond starting the container and passing the
health gate: drain + enable + Ansible's bookkeeping between the phases are in it, pull is not (it
happens before the host is drained) and is shown on its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from benchkit import ROOT, playbook, results_folder, write_results

LEDGER = ROOT / "artifacts" / "ledger" / "deployments.jsonl"
PHASES = ("pull", "drain", "start", "gate", "enable")


def ledger_lines() -> list[str]:
    return LEDGER.read_text().splitlines() if LEDGER.exists() else []


def rollout(version: str) -> float:
    start = time.monotonic()
    playbook("playbooks/rollout.yml", "-e", f"rollout_version={version}")  # raises with the output on failure
    return time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--away", default="v1")
    parser.add_argument("--back", default="v2")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench")
    args = parser.parse_args(argv)

    offset = len(ledger_lines())
    walls = {args.away: rollout(args.away), args.back: rollout(args.back)}
    records = [json.loads(line) for line in ledger_lines()[offset:]]
    deployed = [r for r in records if r["result"] == "deployed" and r.get("timings_s")]
    if not deployed:
        raise SystemExit("the rollouts deployed nothing (was the fleet already on those versions?)")

    rows = []
    for r in deployed:
        t = r["timings_s"]
        out_of_rotation = t["drain"] + t["start"] + t["gate"] + t["enable"]
        rows.append(
            {
                "host": r["host"],
                "version": r["version"],
                **{p: t[p] for p in PHASES},
                "out_of_rotation_s": round(out_of_rotation, 2),
                "overhead_s": round(out_of_rotation - t["start"] - t["gate"], 2),
            }
        )
    lines = [
        "| Host | To | Pull | Drain | Start | Gate | Enable | Out of rotation | Overhead |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['host']} | {r['version']} | "
            + " | ".join(f"{r[p]:.2f} s" for p in PHASES)
            + f" | {r['out_of_rotation_s']:.2f} s | {r['overhead_s']:.2f} s |"
        )
    overheads = [r["overhead_s"] for r in rows]
    lines += [
        "",
        f"- Overhead per host beyond container start + health gate: median {statistics.median(overheads):.2f} s, "
        f"max {max(overheads):.2f} s (goal ≤ 5 s)",
        "- Playbook wall time: "
        + ", ".join(f"{v}: {w:.0f} s for {sum(r['version'] == v for r in rows)} hosts" for v, w in walls.items()),
    ]
    write_results(results_folder(args.out, "rollout-"), {"walls_s": walls, "hosts": rows}, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
