"""``mlfleet report``: one self-contained HTML page about the fleet, for people who do not read YAML.

What runs where (from the ledger, checked against what Prometheus sees running), the rollout
timeline (the ledger), per-version traffic, errors and latency (Prometheus range queries) and the
drift history (the drift runs' report.json files). The numbers also go to a JSON file beside the
page, so that a dashboard or a test can read them without parsing HTML.

The data is gathered here; ``mlfleet.report_render`` draws the charts and writes the page.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlfleet import ledger
from mlfleet.cli import Parser, UsageError, parse_or_say
from mlfleet.progress import Progress
from mlfleet.site import default_project_dir

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_PARTIAL = 2
SCHEMA_VERSION = 1
REPORT = Path("artifacts/report/fleet-report.html")
DRIFT_DIR = Path("artifacts/drift")
PROMETHEUS_ENV = "MLFLEET_PROMETHEUS_URL"
_DURATION = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": 60, "h": 3600, "d": 86400}

# The version each replica runs, per (host, container), joined onto the model servers' own series
# (the Grafana serving dashboard joins the same way).
RUNNING = "max by (host, container, model, version) (mlfleet_replica_info)"
UP = 'max by (host, container) (up{job="model"})'
OK = "rate(model_infer_request_success_total[{w}])"
FAILED = "rate(model_infer_request_failure_total[{w}])"
BUCKETS = 'rate(rest_server_request_duration_seconds_bucket{{path=~".*/infer"}}[{w}])'

EPILOG = f"""\
exit codes:
  {EXIT_OK}  the report was written from every source it was given
  {EXIT_FAILED}  no report: the ledger could not be read, or the command line was wrong (reason on stderr)
  {EXIT_PARTIAL}  the report was written, but a source could not be read (Prometheus unreachable, a
     drift report unreadable): the page and stderr name it

Sources: the ledger (required), the drift runs under the drift folder (optional), and Prometheus
(--prometheus or ${PROMETHEUS_ENV}; without one the page has no traffic charts and says so).
The page loads nothing from the network: charts are inline SVG, drawn with matplotlib.
"""


def by_running_version(expr: str) -> str:
    return f"({expr}) * on (host, container) group_left (version) {RUNNING}"


def serving_queries(window: str) -> dict[str, str]:
    """PromQL per chart, per (model, version): requests/s, error ratio, p99 latency (s)."""
    ok, failed, buckets = (q.format(w=window) for q in (OK, FAILED, BUCKETS))
    per_version = "sum by (model, version) ({})"
    return {
        "requests_per_s": per_version.format(by_running_version(ok)),
        "error_ratio": (
            f"{per_version.format(by_running_version(failed))} / "
            f"{per_version.format(by_running_version(f'{ok} + {failed}'))}"
        ),
        "latency_p99_s": f"histogram_quantile(0.99, sum by (model, version, le) ({by_running_version(buckets)}))",
    }


def resolution(span: timedelta, points: int = 240) -> tuple[int, str]:
    """The step of queries over ``span`` (at most ``points`` a line, at least a 15 s scrape interval)
    and the window of their rates (four steps, at least 60 s)."""
    step = max(int(span.total_seconds()) // points, 15)
    return step, f"{max(step * 4, 60)}s"


# The per-version totals sum a rate step by step: a fine step keeps the short-lived series of a
# rollout (a replica restarted on another version) from being under-counted (a 90 s step over a lab
# rollout counted 35 % fewer requests than increase(); a 15 s step, 1 % fewer).
TOTALS_POINTS = 5760  # 15 s steps over a day


def totals_queries(span: timedelta) -> dict[str, str]:
    """PromQL per (model, version) at the end of ``span``: replicas running now, and the requests
    served and failed over the span. The version of a replica changes during the span, so the
    per-version rate is summed step by step (a subquery), not joined once at the end."""
    step, window = resolution(span, TOTALS_POINTS)
    ok, failed = (q.format(w=window) for q in (OK, FAILED))
    over_span = "sum by (model, version) (sum_over_time(({})[{}s:{}s])) * {}"
    seconds = int(span.total_seconds())
    return {
        "replicas_running": f"count by (model, version) ({RUNNING})",
        "requests": over_span.format(by_running_version(ok), seconds, step, step),
        "failed_requests": over_span.format(by_running_version(failed), seconds, step, step),
    }


@dataclass
class Replica:
    host: str
    model: str
    container: str
    device: str
    version: str  # what the ledger says it runs
    since: str
    action: str
    running_version: str | None = None  # what Prometheus sees it run (mlfleet_replica_info)
    up: bool | None = None  # Prometheus could scrape it (up{job="model"})

    @property
    def agrees(self) -> bool | None:
        return None if self.running_version is None else self.running_version == self.version


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]  # (unix time, value)


@dataclass
class FleetReport:
    generated: str
    start: str
    end: str
    site: str
    ledger: str
    prometheus: str | None
    step_s: int = 0  # the step of the charts' range queries
    totals_step_s: int = 0  # the step at which the per-version totals sum their rates
    replicas: list[Replica] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # ledger records in the range, oldest first
    versions: list[dict[str, Any]] = field(default_factory=list)  # per (model, version): replicas, requests
    charts: dict[str, list[Series]] = field(default_factory=dict)
    drift_runs: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # sources that could not be read

    @property
    def summary(self) -> dict[str, Any]:
        results: dict[str, int] = {}
        for event in self.events:
            results[str(event.get("result"))] = results.get(str(event.get("result")), 0) + 1
        last_drift = self.drift_runs[-1] if self.drift_runs else None
        return {
            "hosts": len({r.host for r in self.replicas}),
            "replicas": len(self.replicas),
            "replicas_down": sum(1 for r in self.replicas if r.up is False),
            "replicas_disagreeing": sum(1 for r in self.replicas if r.agrees is False),
            "models": len({r.model for r in self.replicas}),
            "versions_serving": sorted({f"{r.model} {r.version}" for r in self.replicas}),
            "ledger_records_in_range": len(self.events),
            "results_in_range": dict(sorted(results.items())),
            "last_drift_result": last_drift["result"] if last_drift else None,
            "last_drift_drifted_hosts": len(last_drift["drifted_hosts"]) if last_drift else None,
        }


def to_dict(report: FleetReport) -> dict[str, Any]:
    data = asdict(report)
    data["schema"] = SCHEMA_VERSION
    data["tool"] = "mlfleet.report"
    data["summary"] = report.summary
    for replica, obj in zip(data["replicas"], report.replicas, strict=True):
        replica["agrees"] = obj.agrees
    return data


def replicas_from_ledger(records: Sequence[dict[str, Any]]) -> list[Replica]:
    """Per (host, model, container): the last record after which that replica ran its version.

    A record names the replicas its batch changed; a host's other replicas keep the version of
    their own last record. Records without replicas (older ledgers) stand for the host's first one.
    """
    latest: dict[tuple[str, str, str], Replica] = {}
    for record in records:
        if record.get("result") not in ledger.SERVING:
            continue
        host, model = str(record.get("host")), str(record.get("model"))
        for replica in record.get("replicas") or [{"container": f"model-{model}", "device": ""}]:
            container = str(replica.get("container"))
            latest[(host, model, container)] = Replica(
                host=host,
                model=model,
                container=container,
                device=str(replica.get("device") or ""),
                version=str(record.get("version")),
                since=str(record.get("when", "")),
                action=str(record.get("action", "")),
            )
    return [latest[key] for key in sorted(latest)]


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration like 30m, 6h or 7d")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Prometheus:
    """The two read endpoints the report uses, over HTTP(S); errors raise PrometheusError."""

    def __init__(self, url: str, timeout: float = 15.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: dict[str, str]) -> Any:
        address = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(address, timeout=self.timeout) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise PrometheusError(f"{self.url} answered HTTP {exc.code} to {params.get('query')!r}: {detail}") from None
        except (OSError, ValueError) as exc:
            raise PrometheusError(f"{self.url} could not be read: {exc}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{self.url} refused {params.get('query')!r}: {body.get('error')}")
        return body["data"]["result"]

    def query(self, expr: str, at: datetime) -> list[dict[str, Any]]:
        return self._get("/api/v1/query", {"query": expr, "time": f"{at.timestamp():.3f}"})

    def query_range(self, expr: str, start: datetime, end: datetime, step: int) -> list[dict[str, Any]]:
        params = {
            "query": expr,
            "start": f"{start.timestamp():.3f}",
            "end": f"{end.timestamp():.3f}",
            "step": str(step),
        }
        return self._get("/api/v1/query_range", params)


class PrometheusError(Exception):
    pass


def add_prometheus(report: FleetReport, prom: Prometheus, start: datetime, end: datetime, progress: Progress) -> None:
    """What Prometheus sees running and answering, and the serving charts of the range."""
    progress.start_phase("Prometheus: what runs")
    running = {
        (s["metric"].get("host"), s["metric"].get("container")): s["metric"].get("version")
        for s in prom.query(RUNNING, end)
    }
    up = {(s["metric"].get("host"), s["metric"].get("container")): s["value"][1] == "1" for s in prom.query(UP, end)}
    for replica in report.replicas:
        replica.running_version = running.get((replica.host, replica.container))
        replica.up = up.get((replica.host, replica.container))
    step, window = resolution(end - start)
    report.step_s = step
    for name, expr in serving_queries(window).items():
        progress.start_phase(f"Prometheus: {name}")
        report.charts[name] = [
            Series(
                label=f"{s['metric'].get('model', '?')} {s['metric'].get('version', '?')}",
                points=[(float(t), float(v)) for t, v in s["values"] if v not in ("NaN", "+Inf", "-Inf")],
            )
            for s in prom.query_range(expr, start, end, step)
        ]
    progress.start_phase("Prometheus: totals per version")
    totals: dict[tuple[str, str], dict[str, Any]] = {}
    report.totals_step_s = resolution(end - start, TOTALS_POINTS)[0]
    for key, expr in totals_queries(end - start).items():
        for s in prom.query(expr, end):
            row = totals.setdefault(
                (s["metric"].get("model", "?"), s["metric"].get("version", "?")),
                {"model": s["metric"].get("model", "?"), "version": s["metric"].get("version", "?")},
            )
            row[key] = round(float(s["value"][1]))
    report.versions = [
        {"replicas_running": 0, "requests": 0, "failed_requests": 0, **totals[key]} for key in sorted(totals)
    ]


def drift_runs(folder: Path, start: datetime, problems: list[str]) -> list[dict[str, Any]]:
    """The drift runs that started in the range, oldest first: when, result, hosts, drifted hosts."""
    runs = []
    for path in sorted(folder.glob("*/report.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            started = str(data["started"])
            summary = data.get("summary") or {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"drift report {path} could not be read: {exc}")
            continue
        if started < iso(start):
            continue
        runs.append(
            {
                "started": started,
                "result": str(data.get("result")),
                "remediate": bool(data.get("remediate")),
                "hosts": len(summary),
                "drifted_hosts": sorted(h for h, s in summary.items() if s.get("status") == "drift"),
                "failed_hosts": sorted(h for h, s in summary.items() if s.get("status") in ("failed", "unreachable")),
                "folder": path.parent.name,
            }
        )
    return sorted(runs, key=lambda r: r["started"])


def parse_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    parser = Parser(
        prog=prog,
        description="Write the fleet report: one self-contained HTML page (and its numbers as JSON).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--project-dir", type=Path, help="the site repository (default: the one around the cwd)")
    parser.add_argument("--ledger", type=Path, help=f"the deployment ledger (default: SITE/{ledger.LEDGER})")
    parser.add_argument("--drift-dir", type=Path, help=f"the drift runs' folders (default: SITE/{DRIFT_DIR})")
    parser.add_argument("--prometheus", help=f"Prometheus base URL (default: ${PROMETHEUS_ENV}; none: no charts)")
    parser.add_argument("--range", default="24h", help="how far back: 30m, 6h, 7d (default: %(default)s)")
    parser.add_argument("--out", type=Path, help=f"the HTML page (default: SITE/{REPORT}); the JSON goes beside it")
    parser.add_argument("--title", default="Fleet report", help="the page's title (default: %(default)s)")
    parser.add_argument(
        "-o",
        "--output",
        choices=["path", "json", "markdown"],
        default="path",
        help="what to print: the page's path, the numbers as JSON, or a Markdown summary (default: %(default)s)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress line on a terminal")
    args = parser.parse_args(argv)
    try:
        args.span = parse_duration(args.range)
    except ValueError as exc:
        raise UsageError(f"--range: {exc}") from None
    return args


def build(args: argparse.Namespace, progress: Progress, now: datetime | None = None) -> FleetReport:
    """The report's data from its sources. Raises OSError/ValueError when the ledger cannot be read."""
    site = (args.project_dir or default_project_dir()).resolve()
    end = (now or datetime.now(UTC)).replace(microsecond=0)  # the JSON names it to the second
    start = end - args.span
    ledger_path = args.ledger or site / ledger.LEDGER
    progress.start_phase("ledger")
    records = ledger.read(ledger_path)
    report = FleetReport(
        generated=iso(end),
        start=iso(start),
        end=iso(end),
        site=str(site),
        ledger=str(ledger_path),
        prometheus=args.prometheus or os.environ.get(PROMETHEUS_ENV) or None,
        replicas=replicas_from_ledger(records),
        events=[r for r in records if str(r.get("when", "")) >= iso(start)],
    )
    progress.start_phase("drift runs")
    report.drift_runs = drift_runs(args.drift_dir or site / DRIFT_DIR, start, report.problems)
    if report.prometheus:
        try:
            add_prometheus(report, Prometheus(report.prometheus), start, end, progress)
        except PrometheusError as exc:
            report.problems.append(f"Prometheus: {exc}")
    return report


def main(argv: Sequence[str] | None = None, prog: str = "mlfleet report") -> int:
    args = parse_or_say(parse_args, argv, prog)
    if args is None:
        return EXIT_FAILED
    progress = Progress(enabled=False if args.quiet else None)
    try:
        report = build(args, progress)
    except FileNotFoundError as exc:
        progress.close()
        hint = "no rollout has run from this site repository (or give --ledger)"
        print(f"No ledger at {exc.filename}: {hint}.", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, ValueError) as exc:
        progress.close()
        print(f"Could not read the ledger: {exc}", file=sys.stderr)
        return EXIT_FAILED
    # matplotlib is imported only now, so that --help and a bad ledger answer at once.
    from mlfleet import report_render

    progress.start_phase("charts and page")
    out = (args.out or Path(report.site) / REPORT).resolve()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report_render.html(report, args.title), encoding="utf-8")
        out.with_suffix(".json").write_text(json.dumps(to_dict(report), indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        progress.close()
        print(f"Could not write the report: {exc}", file=sys.stderr)
        return EXIT_FAILED
    progress.close()
    for problem in report.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if args.output == "json":
        print(json.dumps(to_dict(report), indent=2))
    elif args.output == "markdown":
        sys.stdout.write(report_render.markdown(report, args.title, out))
    else:
        print(out)
    return EXIT_PARTIAL if report.problems else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
