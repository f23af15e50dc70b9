"""Plots of the benchmark tables: what docs/benchmarks.md shows as tables, drawn with matplotlib.

Reads the Markdown tables that the benchmarks write (artifacts/bench/*/table.md) or that
docs/benchmarks.md keeps, recognises them by their header, and writes one SVG per table:

- converge and drift runs per Ansible setting (fleet_bench.py): ``fleet-n<N>.svg``, wall time with
  its min-max range, beside the control-node and host CPU of the same runs;
- per-host rollout phases (rollout_bench.py): ``rollout.svg``, one stacked bar per host and version;
- latency through the load balancer and direct (endpoint_bench.py): ``endpoint.svg``, p50/p95/p99
  per arm and connection count, throughput on the labels.

Of two tables of one kind (the same N twice, say) the first is drawn: docs/benchmarks.md puts the
figures of record first. Usage::

    python benchmarks/plot.py docs/benchmarks.md --out docs/img/bench
    python benchmarks/plot.py artifacts/bench/*/table.md --out artifacts/bench/plots

Exit codes: 0 plots written, 1 no benchmark table found in the input, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# A fixed hash salt keeps the SVG's ids the same from run to run: the files diff only when data does.
plt.rcParams.update({"svg.hashsalt": "mlfleet-bench", "svg.fonttype": "none", "font.size": 9})
SETTINGS_COLOURS = {"stock": "#9e9e9e", "project": "#1f77b4", "mitogen": "#2ca02c"}
PHASES = ("Pull", "Drain", "Start", "Gate", "Enable")
PERCENTILES = ("p50", "p95", "p99")
NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]

    def column(self, name: str) -> list[str]:
        index = next(i for i, h in enumerate(self.header) if h.startswith(name))
        return [row[index] for row in self.rows]


def tables(markdown: str) -> list[Table]:
    """Every pipe table of the text, cells stripped, the separator row left out."""
    found: list[Table] = []
    block: list[list[str]] = []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if len(block) >= 3 and set("".join(block[1])) <= set("-: "):
            found.append(Table(block[0], [row for row in block[2:] if len(row) == len(block[0])]))
        block = []
    return found


def number(cell: str) -> float:
    """The first number of a cell ("165.4 s (159.24–176.32)" is 165.4; "−2.4 %" is -2.4)."""
    match = NUMBER.search(cell.replace("−", "-"))
    if match is None:
        raise ValueError(f"no number in table cell {cell!r}")
    return float(match.group())


def spread(cell: str) -> tuple[float, float] | None:
    """The (min, max) in parentheses of a "median (min–max)" cell, if it has one."""
    match = re.search(r"\(([0-9.]+)[–-]([0-9.]+)\)", cell)
    return (float(match.group(1)), float(match.group(2))) if match else None


def kind(table: Table) -> str | None:
    first = table.header[0]
    if first.startswith("Workload (N=") and "Settings" in table.header:
        return "fleet-n" + first.removeprefix("Workload (N=").rstrip(")")
    if table.header[:3] == ["Host", "To", "Pull"]:
        return "rollout"
    if table.header[:2] == ["Arm", "Connections"]:
        return "endpoint"
    return None


def plot_fleet(table: Table, hosts: str) -> plt.Figure:
    # A setting whose runs all failed has no figures ("| converge | stock | 0 | failed | ... |").
    table = Table(table.header, [row for row in table.rows if NUMBER.search(row[table.header.index("Runs") + 1])])
    labels = [f"{w}\n{s}" for w, s in zip(table.column("Workload"), table.column("Settings"), strict=True)]
    colours = [SETTINGS_COLOURS.get(s, "#7f7f7f") for s in table.column("Settings")]
    walls = [number(c) for c in table.column("Wall")]
    ranges = [spread(c) for c in table.column("Wall")]
    low = [w - r[0] if r else 0 for w, r in zip(walls, ranges, strict=True)]
    high = [r[1] - w if r else 0 for w, r in zip(walls, ranges, strict=True)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
    x = range(len(labels))
    left.bar(x, walls, color=colours, yerr=[low, high] if any(ranges) else None, capsize=3)
    left.set(title=f"Wall time, N = {hosts} (median, min–max)", ylabel="seconds", xticks=list(x))
    left.set_xticklabels(labels)
    control = [number(c) for c in table.column("Control CPU")]
    host = [number(c) for c in table.column("Host CPU")]
    right.bar(x, control, color="#ff7f0e", label="control node")
    right.bar(x, host, bottom=control, color="#8c564b", label="lab hosts")
    right.set(title="CPU time of the same runs", ylabel="CPU-seconds", xticks=list(x))
    right.set_xticklabels(labels)
    right.legend(frameon=False)
    return fig


def plot_rollout(table: Table) -> plt.Figure:
    labels = [f"{h} → {v}" for h, v in zip(table.column("Host"), table.column("To"), strict=True)]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(labels) + 1.4), layout="constrained")
    left = [0.0] * len(labels)
    for phase in PHASES:
        values = [number(c) for c in table.column(phase)]
        ax.barh(labels, values, left=left, label=phase.lower())
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.invert_yaxis()
    ax.set(title="Rollout phases per host (drain + enable: out of rotation beyond start and gate)", xlabel="seconds")
    ax.legend(ncols=len(PHASES), loc="lower center", bbox_to_anchor=(0.5, 1.08), frameon=False)
    return fig


def plot_endpoint(table: Table) -> plt.Figure:
    rps = table.column("Throughput")
    labels = [
        f"{a}, {c} conn\n{number(r):.0f} req/s"
        for a, c, r in zip(table.column("Arm"), table.column("Connections"), rps, strict=True)
    ]
    fig, ax = plt.subplots(figsize=(9, 3.4), layout="constrained")
    width = 0.8 / len(PERCENTILES)
    for i, name in enumerate(PERCENTILES):
        values = [number(c) for c in table.column(name)]
        ax.bar([x + (i - 1) * width for x in range(len(labels))], values, width, label=name)
    ax.set(title="Latency per arm and connection count", ylabel="milliseconds", xticks=list(range(len(labels))))
    ax.set_xticklabels(labels)
    ax.legend(frameon=False)
    return fig


def plot(table: Table) -> tuple[str, plt.Figure] | None:
    name = kind(table)
    if name is None:
        return None
    if name.startswith("fleet-n"):
        return name, plot_fleet(table, name.removeprefix("fleet-n"))
    return name, plot_rollout(table) if name == "rollout" else plot_endpoint(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="Markdown files with benchmark tables")
    parser.add_argument("--out", type=Path, required=True, help="folder for the SVG files")
    args = parser.parse_args(argv)
    written: dict[str, Path] = {}
    for source in args.inputs:
        for table in tables(source.read_text()):
            name = kind(table)
            if name is None or name in written:
                continue
            _, fig = plot(table)  # type: ignore[misc]
            args.out.mkdir(parents=True, exist_ok=True)
            path = args.out / f"{name}.svg"
            fig.savefig(path, format="svg", metadata={"Date": None})
            plt.close(fig)
            written[name] = path
            print(path)
    if not written:
        print("plot: no benchmark table found in " + ", ".join(map(str, args.inputs)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
