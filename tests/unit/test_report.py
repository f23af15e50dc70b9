"""`mlfleet report`: the replicas from the ledger, the drift history, the page, its exit codes.

Prometheus' part is fed with responses recorded from the lab's Prometheus after a v1 -> v2 rollout
under load (fixtures/report/prometheus.json); the end-to-end test runs it against the real one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from mlfleet import report, report_render
from mlfleet.progress import Progress

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "unit" / "fixtures" / "report"
NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)


def record(when: str, host: str, result: str, version: str, *containers: str, **extra: Any) -> dict[str, Any]:
    return {
        "when": when,
        "host": host,
        "model": "iris",
        "action": extra.pop("action", "rollout"),
        "result": result,
        "version": version,
        "from_version": extra.pop("from_version", None),
        "replicas": [{"container": c, "device": "CPU (shared)"} for c in containers],
        "who": "ops",
        "failure": extra.pop("failure", None),
        **extra,
    }


RECORDS = [
    record("2026-12-01T10:00:00Z", "cpu-1", "deployed", "v1", "model-iris", "model-iris-1"),
    record("2026-12-01T10:00:05Z", "gpu-1", "deployed", "v1", "model-iris"),
    # v2: the canary replica of cpu-1 only, then gpu-1 fails its gate and is rolled back.
    record("2026-12-03T09:00:00Z", "cpu-1", "deployed", "v2", "model-iris", from_version="v1"),
    record("2026-12-03T09:01:00Z", "gpu-1", "failed", "v2", "model-iris", failure="gate: answered 500"),
    record("2026-12-03T09:01:30Z", "gpu-1", "rolled_back", "v1", "model-iris", from_version="v1"),
    record("2026-12-03T09:05:00Z", "cpu-1", "returned", "v2", "model-iris"),
    record("2026-12-03T09:06:00Z", "cpu-1", "left_out", "v2", "model-iris-1", failure="lb-1 unreachable"),
]


class Tables(HTMLParser):
    """The page's tables by id (rows of cell texts), the ids of its figures, and every src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.ids: list[str] = []
        self.links: list[str] = []
        self.tiles: dict[str, str] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._tile: str | None = None
        self._in_dd = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(str(a["id"]))
        self.links += [str(a[k]) for k in ("src", "href") if a.get(k)]
        if tag == "table":
            self._table = str(a.get("id"))
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "div" and a.get("data-key"):
            self._tile = str(a["data-key"])
        elif tag == "dd" and self._tile:
            self._in_dd = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            if self._row:
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "dd":
            self._in_dd = False
            self._tile = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_dd and self._tile:
            self.tiles[self._tile] = self.tiles.get(self._tile, "") + data.strip()


def parse(page: str) -> Tables:
    tables = Tables()
    tables.feed(page)
    return tables


class Recorded:
    """Prometheus' answers recorded from the lab (fixtures/report/record.py), by exact query: a query
    the report sends that was not recorded fails the test."""

    def __init__(self) -> None:
        self.answers = json.loads((FIXTURES / "prometheus.json").read_text())
        self.span = report.parse_duration(self.answers["range"])

    def query(self, expr: str, at: datetime) -> list[dict[str, Any]]:
        assert expr in self.answers["query"], expr
        return self.answers["query"][expr]

    def query_range(self, expr: str, start: datetime, end: datetime, step: int) -> list[dict[str, Any]]:
        assert expr in self.answers["query_range"], expr
        return self.answers["query_range"][expr]


def args(tmp_path: Path, ledger_file: Path, **kw: Any) -> Any:
    ns = report.parse_args(["--ledger", str(ledger_file), "--project-dir", str(tmp_path), "--range", "7d"], "t")
    for key, value in kw.items():
        setattr(ns, key, value)
    return ns


@pytest.fixture()
def ledger_file(tmp_path: Path) -> Path:
    path = tmp_path / "deployments.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return path


def run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlfleet", "report", *argv], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_each_replica_runs_the_version_of_its_own_last_serving_record() -> None:
    replicas = {(r.host, r.container): (r.version, r.since) for r in report.replicas_from_ledger(RECORDS)}
    assert replicas == {
        # The canary replica moved to v2; its sibling, never changed since, still runs v1 (the later
        # left_out and returned records change nobody's version).
        ("cpu-1", "model-iris"): ("v2", "2026-12-03T09:00:00Z"),
        ("cpu-1", "model-iris-1"): ("v1", "2026-12-01T10:00:00Z"),
        # Failed, then rolled back to v1.
        ("gpu-1", "model-iris"): ("v1", "2026-12-03T09:01:30Z"),
    }


def test_a_record_without_replicas_stands_for_the_hosts_first_replica() -> None:
    old = {k: v for k, v in RECORDS[0].items() if k != "replicas"}
    (replica,) = report.replicas_from_ledger([old])
    assert (replica.host, replica.container, replica.version) == ("cpu-1", "model-iris", "v1")


def test_drift_runs_in_the_range_oldest_first_and_an_unreadable_one_is_named(tmp_path: Path) -> None:
    def write(folder: str, started: str, result: str, summary: dict[str, str]) -> None:
        (tmp_path / folder).mkdir()
        data = {"started": started, "result": result, "remediate": result == "remediated"}
        data["summary"] = {h: {"status": s, "drift": 1 if s == "drift" else 0, "failed": 0} for h, s in summary.items()}
        (tmp_path / folder / "report.json").write_text(json.dumps(data))

    write("20261120T000000Z", "2026-11-20T00:00:00Z", "clean", {"cpu-1": "clean"})  # before the range
    write("20261203T080000Z", "2026-12-03T08:00:00Z", "remediated", {"cpu-1": "clean", "lb-1": "clean"})
    write("20261202T080000Z", "2026-12-02T08:00:00Z", "drift", {"cpu-1": "drift", "lb-1": "unreachable"})
    (tmp_path / "20261203T090000Z").mkdir()
    (tmp_path / "20261203T090000Z" / "report.json").write_text("{not json")
    problems: list[str] = []
    runs = report.drift_runs(tmp_path, datetime(2026, 11, 26, tzinfo=UTC), problems)
    assert [(r["started"], r["result"], r["drifted_hosts"], r["failed_hosts"], r["hosts"]) for r in runs] == [
        ("2026-12-02T08:00:00Z", "drift", ["cpu-1"], ["lb-1"], 2),
        ("2026-12-03T08:00:00Z", "remediated", [], [], 2),
    ]
    assert len(problems) == 1 and "20261203T090000Z/report.json could not be read" in problems[0]


def test_prometheus_joins_running_versions_and_health_and_fills_the_charts(tmp_path: Path, ledger_file: Path) -> None:
    built = report.build(args(tmp_path, ledger_file), Progress(enabled=False), NOW)
    prom = Recorded()
    report.add_prometheus(built, prom, NOW - prom.span, NOW, Progress(enabled=False))  # type: ignore[arg-type]
    # Recorded after v2 rolled out everywhere: cpu-1's second replica and gpu-1 disagree with this
    # ledger (they run v2 in the recording), and gpu-1 did not answer its last scrape.
    seen = {(r.host, r.container): (r.version, r.running_version, r.agrees, r.up) for r in built.replicas}
    assert seen == {
        ("cpu-1", "model-iris"): ("v2", "v2", True, True),
        ("cpu-1", "model-iris-1"): ("v1", "v2", False, True),
        ("gpu-1", "model-iris"): ("v1", "v2", False, False),
    }
    assert built.summary["replicas_disagreeing"] == 2 and built.summary["replicas_down"] == 1
    assert [(v["model"], v["version"]) for v in built.versions] == [("iris", "v1"), ("iris", "v2")]
    v1, v2 = built.versions
    assert v1["replicas_running"] == 0 and v1["requests"] > 0 and v2["replicas_running"] == 6 and v2["requests"] > 0
    assert {s.label for s in built.charts["requests_per_s"]} == {"iris v1", "iris v2"}
    # NaN points (no traffic: 0/0 error ratio) are left out, not drawn as zero.
    assert all(v == v for series in built.charts.values() for s in series for _, v in s.points)
    assert any(s.points for s in built.charts["latency_p99_s"])


def test_the_page_is_self_contained_and_shows_the_ledger(tmp_path: Path, ledger_file: Path) -> None:
    built = report.build(args(tmp_path, ledger_file), Progress(enabled=False), NOW)
    page = report_render.html(built, "Fleet report")
    tables = parse(page)
    # Nothing is fetched: no src or href, and a policy that forbids any fetch.
    assert tables.links == []
    assert "default-src 'none'" in page
    assert [row[:5] for row in tables.tables["replicas"]] == [
        ["cpu-1", "iris", "model-iris", "CPU (shared)", "v2"],
        ["cpu-1", "iris", "model-iris-1", "CPU (shared)", "v1"],
        ["gpu-1", "iris", "model-iris", "CPU (shared)", "v1"],
    ]
    # The range (7 days back from NOW) holds every record; the table shows them newest first.
    assert [row[0] for row in tables.tables["events"]] == [r["when"] for r in reversed(RECORDS)]
    assert tables.tiles == {
        "hosts": "2",
        "replicas": "3",
        "replicas_down": "0",
        "models": "1",
        "ledger_records_in_range": "7",
        "failures_in_range": "2",
    }
    assert "chart-timeline" in tables.ids and page.count("<svg") == 1
    assert "No Prometheus was given" in page


def test_the_range_leaves_older_records_out_of_the_timeline(tmp_path: Path, ledger_file: Path) -> None:
    ns = args(tmp_path, ledger_file, span=report.parse_duration("1d"))
    built = report.build(ns, Progress(enabled=False), NOW)
    assert [e["when"][:10] for e in built.events] == ["2026-12-03"] * 5
    assert len(built.replicas) == 3  # what runs where is the whole ledger's answer


def test_report_writes_the_page_and_its_numbers_and_prints_the_path(tmp_path: Path, ledger_file: Path) -> None:
    out = tmp_path / "out" / "fleet.html"
    res = run("--ledger", str(ledger_file), "--range", "3650d", "--out", str(out), "--drift-dir", str(tmp_path))
    assert (res.returncode, res.stdout.strip(), res.stderr) == (0, str(out), "")
    numbers = json.loads(out.with_suffix(".json").read_text())
    assert numbers["tool"] == "mlfleet.report" and numbers["summary"]["replicas"] == 3
    assert numbers["summary"]["results_in_range"] == {
        "deployed": 3,
        "failed": 1,
        "left_out": 1,
        "returned": 1,
        "rolled_back": 1,
    }
    md = run("--ledger", str(ledger_file), "--range", "3650d", "--out", str(out), "-o", "markdown")
    assert md.returncode == 0 and "| cpu-1 | iris | model-iris-1 | v1 | — | unknown |" in md.stdout


def test_an_unreachable_prometheus_still_writes_the_page_names_it_and_exits_2(
    tmp_path: Path, ledger_file: Path
) -> None:
    out = tmp_path / "fleet.html"
    res = run("--ledger", str(ledger_file), "--out", str(out), "--prometheus", "http://127.0.0.1:9", "-q")
    assert res.returncode == report.EXIT_PARTIAL
    assert re.search(r"warning: Prometheus: http://127.0.0.1:9 could not be read: .*refused", res.stderr), res.stderr
    tables = parse(out.read_text())
    assert "problems" in tables.ids and len(tables.tables["replicas"]) == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--range", "6 hours"], "usage error: --range: '6 hours' is not a duration like 30m, 6h or 7d"),
        (["--range", "0h"], "is not a duration"),
        (["--ledger", "/nonexistent/deployments.jsonl"], "No ledger at /nonexistent/deployments.jsonl"),
    ],
)
def test_bad_input_is_named_and_writes_nothing(tmp_path: Path, argv: list[str], message: str) -> None:
    out = tmp_path / "fleet.html"
    res = run(*argv, "--out", str(out))
    assert res.returncode == report.EXIT_FAILED and message in res.stderr
    assert not out.exists()


def test_a_ledger_line_that_is_no_record_is_named(tmp_path: Path, ledger_file: Path) -> None:
    ledger_file.write_text(ledger_file.read_text() + "not json\n")
    res = run("--ledger", str(ledger_file), "--out", str(tmp_path / "fleet.html"))
    assert res.returncode == 1 and f"{ledger_file}:8 is not a JSON record" in res.stderr
