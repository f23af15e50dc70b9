"""Compliance evidence: the scores of a scan folder, per host, as a summary and as Prometheus series.

A scan (``playbooks/compliance_scan.yml``, the ``mlfleet.fleet.compliance_scan`` role) leaves one
folder: per host the OpenSCAP results (``arf-<profile>.xml``, ARF with the XCCDF TestResult inside;
plain XCCDF results files are read too), the HTML reports and Lynis' ``lynis-report.dat``; beside
them ``waivers.yml``, the rules the scan's tailoring left out and why, and ``values.yml``, the
profile variables the tailoring set to the site's values and why. ``mlfleet compliance`` reads
it and writes ``summary.json`` and ``summary.md`` there, optionally the textfile
``mlfleet_compliance.prom`` for node-exporter (``mlfleet_compliance_score{host, benchmark}`` and
``mlfleet_compliance_gate``, which ComplianceScoreBelowGate and ComplianceScoreDropped read), and
holds the scores to gates (``--gate anssi_bp28_minimal=100 --gate lynis=85``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import yaml

from mlfleet.cli import Parser, parse_or_say
from mlfleet.drift import write_textfile
from mlfleet.site import default_project_dir

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BELOW_GATE = 2
SCANS = Path("artifacts/compliance")
METRICS_FILE = "mlfleet_compliance.prom"
XCCDF = "{http://checklists.nist.gov/xccdf/1.2}"
# A profile's id: the SCAP Security Guide's own, or a tailored one (the scan's: xccdf_io.mlfleet_profile_…).
PROFILE_ID = re.compile(r"^xccdf_.+?_profile_")
RULE_PREFIX = "xccdf_org.ssgproject.content_rule_"
# Rule results that count for the score (the others: not applicable, not selected, not checked...).
COUNTED = ("pass", "fail", "error", "unknown")

EPILOG = f"""\
exit codes:
  {EXIT_OK}  the summary was written; every score is at or above its gate
  {EXIT_FAILED}  no result could be read in the folder (or a file of it is broken: named), or the command
     line was wrong
  {EXIT_BELOW_GATE}  the summary was written, and a host scored under a gate (each named on stderr)

benchmarks: an OpenSCAP profile's short name (anssi_bp28_minimal, anssi_bp28_intermediary, ...)
or lynis (its hardening index).

examples:
  mlfleet compliance                                   # the latest scan of this site repository
  mlfleet compliance --gate anssi_bp28_minimal=100 --gate lynis=85 -o markdown
  mlfleet compliance artifacts/compliance/20261207T161900Z --textfile-dir /var/lib/node_exporter
"""


@dataclass
class Score:
    """One host's result on one benchmark."""

    benchmark: str
    score: float
    results: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    finished: str = ""
    source: str = ""


@dataclass
class HostResult:
    host: str
    scores: dict[str, Score] = field(default_factory=dict)


def short_rule(idref: str) -> str:
    return idref.removeprefix(RULE_PREFIX)


def read_xccdf(path: Path) -> Iterator[Score]:
    """Each XCCDF TestResult of an ARF or XCCDF results file (streamed: an ARF holds the whole data
    stream too, some 14 MB)."""
    for _, element in ET.iterparse(path, events=("end",)):
        if element.tag != f"{XCCDF}TestResult":
            continue
        profile = element.find(f"{XCCDF}profile")
        score = next(
            (s for s in element.iter(f"{XCCDF}score") if s.get("system", "").endswith(":default")),
            element.find(f"{XCCDF}score"),
        )
        if profile is None or score is None or score.text is None:
            raise ValueError(f"{path}: a TestResult without a profile or a score")
        results: Counter[str] = Counter()
        failed = []
        for rule in element.iter(f"{XCCDF}rule-result"):
            outcome = rule.findtext(f"{XCCDF}result", default="unknown")
            results[outcome] += 1
            if outcome in ("fail", "error"):
                failed.append(short_rule(rule.get("idref", "?")))
        results.pop("notselected", None)
        yield Score(
            benchmark=PROFILE_ID.sub("", profile.get("idref", "?")),
            score=round(float(score.text), 2),
            results=dict(sorted(results.items())),
            failed=sorted(failed),
            finished=element.get("end-time", ""),
            source=path.name,
        )
        element.clear()


LYNIS_LINE = re.compile(r"^(?P<key>[a-z_]+)(?P<list>\[\])?=(?P<value>.*)$")


def read_lynis(path: Path) -> Score:
    """Lynis' report file: the hardening index is the score; warnings count as failed tests."""
    values: dict[str, str] = {}
    warnings: list[str] = []
    suggestions = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = LYNIS_LINE.match(line)
        if not match:
            continue
        if match["list"] and match["key"] == "warning":
            warnings.append(match["value"].split("|", 1)[0])
        elif match["list"] and match["key"] == "suggestion":
            suggestions += 1
        elif not match["list"]:
            values[match["key"]] = match["value"]
    if "hardening_index" not in values:
        raise ValueError(f"{path}: no hardening_index (an interrupted Lynis run?)")
    return Score(
        benchmark="lynis",
        score=float(values["hardening_index"]),
        results={"warnings": len(warnings), "suggestions": suggestions},
        failed=sorted(warnings),
        finished=values.get("report_datetime_end", ""),
        source=path.name,
    )


def read_list(path: Path) -> list[dict[str, Any]]:
    """A YAML list written beside the results (waivers.yml, values.yml); none when the file is absent."""
    return list((yaml.safe_load(path.read_text()) if path.is_file() else None) or [])


def read_scan(folder: Path) -> tuple[list[HostResult], list[dict[str, Any]], list[dict[str, Any]]]:
    """Every host folder's scores, and the waivers and the site's values of the scan."""
    hosts = []
    for host_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        result = HostResult(host_dir.name)
        for path in sorted(host_dir.glob("*.xml")):
            for score in read_xccdf(path):
                result.scores[score.benchmark] = score
        lynis = host_dir / "lynis-report.dat"
        if lynis.is_file():
            result.scores["lynis"] = read_lynis(lynis)
        if result.scores:
            hosts.append(result)
    return hosts, read_list(folder / "waivers.yml"), read_list(folder / "values.yml")


def below_gates(hosts: Sequence[HostResult], gates: dict[str, float]) -> list[str]:
    out = []
    for host in hosts:
        for name, gate in gates.items():
            score = host.scores.get(name)
            if score is None:
                out.append(f"{host.host}: no {name} result in the scan (gate {gate:g})")
            elif score.score < gate:
                failed = ", ".join(score.failed[:10]) + (" ..." if len(score.failed) > 10 else "")
                out.append(f"{host.host}: {name} {score.score:g} < gate {gate:g} (failed: {failed or 'none'})")
    return out


def summary(
    folder: Path, hosts: Sequence[HostResult], waivers: list, gates: dict[str, float], values: list | None = None
) -> dict[str, Any]:
    return {
        "scan": str(folder),
        "gates": gates,
        "below_gates": below_gates(hosts, gates),
        "waivers": waivers,
        "values": values or [],
        "hosts": {h.host: {name: asdict(s) for name, s in sorted(h.scores.items())} for h in hosts},
    }


def markdown(report: dict[str, Any]) -> str:
    names = sorted({name for scores in report["hosts"].values() for name in scores})
    out = [f"# Compliance scan `{report['scan']}`", ""]
    out += ["| host | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    gates = report["gates"]
    for host, scores in report["hosts"].items():
        cells = []
        for name in names:
            score = scores.get(name)
            mark = "" if score is None or score["score"] >= gates.get(name, 0) else " **below gate**"
            cells.append("–" if score is None else f"{score['score']:g}{mark}")
        out.append(f"| {host} | " + " | ".join(cells) + " |")
    if gates:
        out += ["", "Gates: " + ", ".join(f"{k} ≥ {v:g}" for k, v in gates.items())]
    out += ["", "## Failed rules and Lynis warnings", ""]
    for host, scores in report["hosts"].items():
        for name, score in scores.items():
            out.append(f"- **{host}, {name}** ({score['source']}): " + (", ".join(score["failed"]) or "none"))
    out += ["", "## Waivers (left out by the scan's tailoring)", ""]
    out += [f"- `{w.get('rule')}`: {w.get('reason')}" for w in report["waivers"]] or ["None."]
    out += ["", "## Site values (set by the scan's tailoring; their rules are scored against them)", ""]
    values = report.get("values") or []
    out += [f"- `{v.get('value')}` = {v.get('set')}: {v.get('reason')}" for v in values] or ["None."]
    return "\n".join(out) + "\n"


def prometheus(hosts: Sequence[HostResult], gates: dict[str, float], now: float) -> str:
    families = [
        (
            "mlfleet_compliance_score",
            "The host's score on the benchmark in the last compliance scan.",
            [(h.host, name, s.score) for h in hosts for name, s in sorted(h.scores.items())],
        ),
        (
            "mlfleet_compliance_gate",
            "The score the benchmark must reach (mlfleet compliance --gate).",
            [(h.host, name, minimum) for h in hosts for name, minimum in gates.items()],
        ),
        (
            "mlfleet_compliance_failed_rules",
            "Failed rules (Lynis: warnings) in the last compliance scan.",
            [(h.host, name, len(s.failed)) for h in hosts for name, s in sorted(h.scores.items())],
        ),
    ]
    lines = []
    for metric, text, rows in families:
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} gauge"]
        lines += [f'{metric}{{host="{host}",benchmark="{name}"}} {value:g}' for host, name, value in rows]
    lines += [
        "# HELP mlfleet_compliance_summary_timestamp_seconds When the scan's summary was written.",
        "# TYPE mlfleet_compliance_summary_timestamp_seconds gauge",
        f"mlfleet_compliance_summary_timestamp_seconds {now:.0f}",
    ]
    return "\n".join(lines) + "\n"


def gate(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not BENCHMARK=SCORE (e.g. lynis=85)") from None


def parse_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    parser = Parser(
        prog=prog,
        description="Summarise a compliance scan folder per host (OpenSCAP profiles and Lynis) and hold it to gates.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scan", nargs="?", type=Path, help=f"the scan folder (default: SITE/{SCANS}/latest)")
    parser.add_argument("--project-dir", type=Path, help="the site repository (default: the one around the cwd)")
    parser.add_argument(
        "--gate", type=gate, action="append", default=[], metavar="BENCHMARK=SCORE", help="a minimum score (repeatable)"
    )
    parser.add_argument("--textfile-dir", type=Path, help=f"write {METRICS_FILE} there for node-exporter")
    parser.add_argument(
        "-o", "--output", choices=["text", "json", "markdown"], default="text", help="(default: %(default)s)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, prog: str = "mlfleet compliance") -> int:
    args = parse_or_say(parse_args, argv, prog)
    if args is None:
        return EXIT_FAILED
    folder = args.scan or (args.project_dir or default_project_dir()) / SCANS / "latest"
    gates = dict(args.gate)
    try:
        hosts, waivers, values = read_scan(folder)
    except FileNotFoundError:
        print(f"No scan folder at {folder}: run playbooks/compliance_scan.yml first (or name one).", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, ValueError, ET.ParseError, yaml.YAMLError) as exc:
        print(f"Could not read the scan {folder}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not hosts:
        print(f"No OpenSCAP or Lynis result in {folder} (one folder per host expected).", file=sys.stderr)
        return EXIT_FAILED
    report = summary(folder, hosts, waivers, gates, values)
    (folder / "summary.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (folder / "summary.md").write_text(markdown(report))
    if args.textfile_dir:
        write_textfile(args.textfile_dir, prometheus(hosts, gates, time.time()), METRICS_FILE)
    if args.output == "json":
        print(json.dumps(report, indent=2, sort_keys=True))
    elif args.output == "markdown":
        sys.stdout.write(markdown(report))
    else:
        for host in hosts:
            scores = ", ".join(f"{name} {s.score:g}" for name, s in sorted(host.scores.items()))
            print(f"{host.host}: {scores}")
        print(f"summary: {folder / 'summary.md'}")
    for line in report["below_gates"]:
        print(f"below gate: {line}", file=sys.stderr)
    return EXIT_BELOW_GATE if report["below_gates"] else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
