"""Draw the fleet report: matplotlib charts as inline SVG, one self-contained HTML page, a Markdown summary.

The page loads nothing: its Content-Security-Policy forbids every fetch, so a chart or style that
tried to would show as an error in the browser's console (the end-to-end test fails on any).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: charts are only ever written to SVG

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mlfleet.report import FleetReport, Series  # noqa: E402

EVENTS_SHOWN = 50
DRIFT_RUNS_SHOWN = 20
RESULT_COLOURS = {
    "deployed": "#2e7d32",
    "rolled_back": "#ef6c00",
    "failed": "#c62828",
    "left_out": "#6a1b9a",
    "returned": "#1565c0",
    "clean": "#2e7d32",
    "drift": "#ef6c00",
    "remediated": "#1565c0",
}
OTHER_COLOUR = "#546e7a"
# Ledger results that leave a replica not serving what the run meant: counted and shown in red.
BAD_RESULTS = ("failed", "left_out")
CHARTS = {
    "requests_per_s": ("Inferences per second, per version", "requests/s"),
    "error_ratio": ("Error ratio, per version", "failed / all"),
    "latency_p99_s": ("Inference latency p99, per version", "seconds"),
}
STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1.5em;color:#1c2430}
h1{margin:0 0 .2em}h2{margin-top:2em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}
.meta{color:#57606a}.tiles{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}
.tile{border:1px solid #d0d7de;border-radius:6px;padding:.6em 1em;min-width:9em}
.tile dt{color:#57606a;font-size:.85em}.tile dd{margin:0;font-size:1.6em;font-weight:600}
table{border-collapse:collapse;width:100%;margin:.8em 0}
th,td{border-bottom:1px solid #e5e8eb;padding:.3em .5em;text-align:left}
td{white-space:nowrap}td.wrap{white-space:normal;font-size:.85em}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#c62828;font-weight:600}.good{color:#2e7d32}
.warn{background:#fff4e5;border:1px solid #ef6c00;padding:.6em 1em;border-radius:6px}
figure{margin:1em 0}svg{max-width:100%;height:auto}.none{color:#57606a;font-style:italic}
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # inline: no XML declaration or DOCTYPE inside the HTML


def _figure(height: float = 3.2) -> tuple[Figure, Any]:
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "mlfleet", "font.size": 9}):
        fig, axes = plt.subplots(figsize=(10, height), dpi=96)
    axes.grid(True, color="#e5e8eb")
    axes.set_axisbelow(True)
    return fig, axes


def _when(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _time_axis(axes: Any) -> None:
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))


def timeline_chart(events: Sequence[dict[str, Any]]) -> str:
    """One row per host, one marker per ledger record, coloured by result and labelled with the version."""
    hosts = sorted({str(e.get("host")) for e in events})
    fig, axes = _figure(max(1.6, 0.45 * len(hosts) + 1))
    seen: set[str] = set()
    for event in events:
        result = str(event.get("result"))
        x, y = _when(str(event["when"])), hosts.index(str(event.get("host")))
        axes.scatter(
            [x],
            [y],
            color=RESULT_COLOURS.get(result, OTHER_COLOUR),
            s=40,
            zorder=3,
            label=None if result in seen else result,
        )
        seen.add(result)
        if len(events) <= 60:
            axes.annotate(str(event.get("version")), (x, y), textcoords="offset points", xytext=(0, 6), fontsize=7)
    axes.set_yticks(range(len(hosts)), hosts)
    axes.set_ylim(-0.7, len(hosts) - 0.3)
    _time_axis(axes)
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _svg(fig)


def series_chart(series: Iterable[Series], unit: str) -> str:
    fig, axes = _figure()
    for line in series:
        if line.points:
            axes.plot(
                [datetime.fromtimestamp(t, UTC) for t, _ in line.points], [v for _, v in line.points], label=line.label
            )
    axes.set_ylabel(unit)
    _time_axis(axes)
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _svg(fig)


def drift_chart(runs: Sequence[dict[str, Any]]) -> str:
    fig, axes = _figure(2.6)
    for result in sorted({r["result"] for r in runs}):
        chosen = [r for r in runs if r["result"] == result]
        axes.scatter(
            [_when(r["started"]) for r in chosen],
            [len(r["drifted_hosts"]) for r in chosen],
            color=RESULT_COLOURS.get(result, OTHER_COLOUR),
            label=result,
            zorder=3,
        )
    axes.set_ylabel("hosts with drift")
    axes.yaxis.get_major_locator().set_params(integer=True)
    _time_axis(axes)
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _svg(fig)


def _table(table_id: str, header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            css, text = ("num", value) if i in numeric else ("", value)
            if isinstance(value, tuple):  # (text, css class)
                text, css = value
            cells.append(f'<td class="{css}">{escape(str(text))}</td>' if css else f"<td>{escape(str(text))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    if not body:
        return f'<p class="none" id="{table_id}">None.</p>'
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _figure_html(name: str, svg: str, caption: str) -> str:
    return f'<figure id="chart-{name}">{svg}<figcaption>{escape(caption)}</figcaption></figure>'


def _yes_no(value: bool | None, yes: str, no: str) -> tuple[str, str]:
    if value is None:
        return ("unknown", "")
    return (yes, "good") if value else (no, "bad")


def html(report: FleetReport, title: str) -> str:
    summary = report.summary
    tiles = [
        ("hosts", "Hosts serving", summary["hosts"]),
        ("replicas", "Replicas", summary["replicas"]),
        ("replicas_down", "Replicas not answering", summary["replicas_down"]),
        ("models", "Models", summary["models"]),
        ("ledger_records_in_range", "Ledger records in range", summary["ledger_records_in_range"]),
        (
            "failures_in_range",
            "Failed or left out",
            sum(n for result, n in summary["results_in_range"].items() if result in BAD_RESULTS),
        ),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">Generated {escape(report.generated)} for {escape(report.site)}, covering '
        f"{escape(report.start)} to {escape(report.end)}. Sources: the ledger {escape(report.ledger)}"
        + (f", Prometheus {escape(report.prometheus)}" if report.prometheus else ", no Prometheus")
        + ", and the drift runs.</p>",
    ]
    if report.problems:
        items = "".join(f"<li>{escape(p)}</li>" for p in report.problems)
        parts.append(
            f'<div class="warn" id="problems"><strong>Not every source could be read:</strong><ul>{items}</ul></div>'
        )
    parts.append('<dl class="tiles" id="summary">')
    parts += [f'<div class="tile" data-key="{k}"><dt>{escape(label)}</dt><dd>{v}</dd></div>' for k, label, v in tiles]
    parts.append("</dl>")

    parts.append("<h2>What runs where</h2>")
    parts.append(
        "<p>One row per replica: the version the ledger recorded for it, and what Prometheus sees it run"
        " (<code>mlfleet_replica_info</code>) and whether it answers scrapes. A disagreement means a change"
        " made outside a rollout, or a rollout that did not finish.</p>"
    )
    parts.append(
        _table(
            "replicas",
            [
                "Host",
                "Model",
                "Replica",
                "Device",
                "Version (ledger)",
                "Running (Prometheus)",
                "Answering",
                "Since",
                "By",
            ],
            [
                [
                    r.host,
                    r.model,
                    r.container,
                    r.device,
                    r.version,
                    ("not seen", "")
                    if r.running_version is None
                    else (r.running_version, "good" if r.agrees else "bad"),
                    _yes_no(r.up, "yes", "no"),
                    r.since,
                    r.action,
                ]
                for r in report.replicas
            ],
        )
    )

    parts.append("<h2>Serving, per version</h2>")
    if not report.prometheus:
        parts.append(
            '<p class="none">No Prometheus was given (--prometheus or MLFLEET_PROMETHEUS_URL): no traffic figures.</p>'
        )
    else:
        parts.append(
            f"<p>Totals over the range {escape(report.start)} to {escape(report.end)}: each version's"
            f" request rate summed every {report.totals_step_s} s, so the counts are close to, not exactly,"
            " the requests served.</p>"
        )
        parts.append(
            _table(
                "versions",
                ["Model", "Version", "Replicas running now", "Requests served (≈)", "Failed requests (≈)"],
                [
                    [v["model"], v["version"], v["replicas_running"], v["requests"], v["failed_requests"]]
                    for v in report.versions
                ],
                numeric={2, 3, 4},
            )
        )
        for name, (caption, unit) in CHARTS.items():
            series = report.charts.get(name, [])
            if any(s.points for s in series):
                parts.append(_figure_html(name, series_chart(series, unit), caption))
            else:
                parts.append(
                    f'<p class="none" id="chart-{name}">{escape(caption)}: no data in the range (no traffic).</p>'
                )

    parts.append("<h2>Rollouts, rollbacks and heals</h2>")
    if report.events:
        caption = "One marker per ledger record, labelled with the version."
        parts.append(_figure_html("timeline", timeline_chart(report.events), caption))
    shown = list(reversed(report.events))[:EVENTS_SHOWN]
    if len(report.events) > EVENTS_SHOWN:
        parts.append(f"<p>The last {EVENTS_SHOWN} of {len(report.events)} records in the range, newest first.</p>")
    parts.append(
        _table(
            "events",
            ["When", "Host", "Model", "Action", "Result", "Version", "From", "Replicas", "Who", "Failure"],
            [
                [
                    e.get("when", ""),
                    e.get("host", ""),
                    e.get("model", ""),
                    e.get("action", ""),
                    (str(e.get("result", "")), "bad" if e.get("result") in BAD_RESULTS else ""),
                    e.get("version", ""),
                    e.get("from_version") or "",
                    ", ".join(str(x.get("container")) for x in e.get("replicas") or []),
                    e.get("who", ""),
                    (e.get("failure") or "", "wrap"),
                ]
                for e in shown
            ],
        )
    )

    parts.append("<h2>Configuration drift</h2>")
    runs = report.drift_runs
    if runs:
        parts.append(_figure_html("drift", drift_chart(runs), "Hosts with drift at each drift run."))
    parts.append(
        _table(
            "drift",
            ["Started", "Result", "Remediate", "Hosts", "Drifted hosts", "Failed or unreachable"],
            [
                [
                    r["started"],
                    (r["result"], "good" if r["result"] in ("clean", "remediated") else "bad"),
                    "yes" if r["remediate"] else "no",
                    r["hosts"],
                    ", ".join(r["drifted_hosts"]),
                    ", ".join(r["failed_hosts"]),
                ]
                for r in list(reversed(runs))[:DRIFT_RUNS_SHOWN]
            ],
            numeric={3},
        )
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def markdown(report: FleetReport, title: str, page: Path) -> str:
    summary = report.summary
    out = [f"# {title}", "", f"Generated {report.generated}, {report.start} to {report.end}. Page: {page}", ""]
    out += [f"- {key.replace('_', ' ')}: {value}" for key, value in summary.items()]
    out += ["", "| host | model | replica | version | running | answering |", "|---|---|---|---|---|---|"]
    for r in report.replicas:
        up = "unknown" if r.up is None else ("yes" if r.up else "no")
        out.append(f"| {r.host} | {r.model} | {r.container} | {r.version} | {r.running_version or '—'} | {up} |")
    if report.versions:
        out += ["", "| model | version | replicas | requests | failed |", "|---|---|---|---|---|"]
        out += [
            f"| {v['model']} | {v['version']} | {v['replicas_running']} | {v['requests']} | {v['failed_requests']} |"
            for v in report.versions
        ]
    out += ["", *[f"**Not read:** {p}" for p in report.problems]] if report.problems else []
    return "\n".join(out) + "\n"
