"""Grafana dashboards as code: the fleet, model serving, GPU and drift dashboards of mlfleet.

Built with Grafana's Foundation SDK (typed builders generated from Grafana's dashboard schema) and
written as JSON into the ``grafana_dashboards`` role, which provisions them on the monitoring host.
``make lint`` runs ``--check`` (fails when a file is out of date); ``make dashboards`` writes them.

Every query reads series that the collection's roles produce: node exporter's ``up``, the model
servers' metrics (MLServer's ``model_infer_*`` and ``rest_server_*``), HAProxy's exporter, the
replica textfile (``mlfleet_replica_info``), the recording rules over DCGM (``mlfleet:replica_gpu_*``)
and the drift textfile (``mlfleet_drift_*``). The running version of a replica comes from
``mlfleet_replica_info`` (written when the replica starts), not from the scrape target's labels,
which show the inventory's pin.

    python tools/dashboards.py [--check] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh, VariableSort
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "collections/ansible_collections/mlfleet/fleet/roles/grafana_dashboards/files/dashboards"
# The datasource the role provisions (grafana_dashboards_datasource_uid).
DS = DataSourceRef(type_val="prometheus", uid="mlfleet-prometheus")
TAGS = ["mlfleet"]

# The version each replica runs, per (host, container): joined onto the model servers' series.
RUNNING = "max by (host, container, model, version) (mlfleet_replica_info)"
MODEL = 'model=~"$model"'
# What a variable set to "All" stands for in a query.
ALL_VALUE = ".+"


def by_running_version(expr: str) -> str:
    """``expr`` (per host and container) with the version label of what the replica runs."""
    return f"({expr}) * on (host, container) group_left (version) {RUNNING}"


def query(expr: str, legend: str = "", ref: str = "A", fmt: PromQueryFormat | None = None, instant: bool = False):
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    if legend:
        q = q.legend_format(legend)
    if fmt is not None:
        q = q.format(fmt)
    if instant:
        q = q.instant()
    return q


def ts(title: str, desc: str, unit: str, *queries, w: int = 12, h: int = 8):
    p = timeseries.Panel().title(title).description(desc).datasource(DS).unit(unit).span(w).height(h)
    for q in queries:
        p = p.with_target(q)
    return p


def big(title: str, desc: str, expr: str, unit: str = "none", w: int = 4):
    return (
        stat.Panel().title(title).description(desc).datasource(DS).unit(unit).span(w).height(4)
        .with_target(query(expr, instant=True))
    )  # fmt: skip


def tab(title: str, desc: str, expr: str, w: int = 24, h: int = 8):
    return (
        table.Panel().title(title).description(desc).datasource(DS).span(w).height(h)
        .with_target(query(expr, fmt=PromQueryFormat.TABLE, instant=True))
    )  # fmt: skip


def variable(name: str, label: str, expr: str):
    return (
        dashboard.QueryVariable(name).label(label).datasource(DS).query(expr)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True).include_all(True).all_value(ALL_VALUE)
    )  # fmt: skip


def as_sent(expr: str, rate_interval: str = "1m") -> str:
    """A panel's query as Grafana sends it to Prometheus with every variable on "All"."""
    return re.sub(r'"\$[A-Za-z_]\w*"', f'"{ALL_VALUE}"', expr.replace("$__rate_interval", rate_interval))


def board(uid: str, title: str, desc: str):
    return (
        dashboard.Dashboard(title).uid(uid).description(desc).tags(TAGS).refresh("30s")
        .time("now-6h", "now").timezone("browser")
    )  # fmt: skip


def version_changes():
    """Annotation: a model version starts or stops running on a replica (rollouts and rollbacks)."""
    expr = (
        "count by (model, version) (mlfleet_replica_info) "
        "unless count by (model, version) (mlfleet_replica_info offset 2m)"
    )
    return (
        dashboard.AnnotationQuery().name("Version rollouts").datasource(DS).enable(True).icon_color("orange")
        .expr(expr)
    )  # fmt: skip


def fleet():
    return (
        board("mlfleet-fleet", "mlfleet / Fleet", "Hosts, replicas, versions and the load balancer at a glance.")
        .annotation(version_changes())
        .with_panel(big("Hosts up", "Node exporters answering.", 'sum(up{job="node"})'))
        .with_panel(big("Hosts down", "Node exporters not answering.", 'count(up{job="node"} == 0) or vector(0)'))
        .with_panel(big("Replicas up", "Model server replicas answering.", 'sum(up{job="model"})'))
        .with_panel(
            big(
                "LB servers in rotation",
                "Load-balancer servers (one per replica) in state UP.",
                'sum(haproxy_server_status{state="UP"})',
            )
        )
        .with_panel(
            big(
                "LB servers out",
                "Servers in MAINT, DRAIN or DOWN: drained by a rollout, or failing checks.",
                'sum(haproxy_server_status{state=~"MAINT|DRAIN|DOWN|NOLB"}) or vector(0)',
            )
        )
        .with_panel(
            big("Alerts firing", "Prometheus alerts now firing.", 'count(ALERTS{alertstate="firing"}) or vector(0)')
        )
        .with_panel(
            tab(
                "What runs where",
                "One row per replica: host, model, the version it runs and its device (mlfleet_replica_info).",
                "max by (host, model, version, replica, container, placement) (mlfleet_replica_info)",
            )
        )
        .with_panel(
            ts(
                "Replicas per version",
                "Replicas running each model version; a rollout moves them from one line to the other.",
                "none",
                query("count by (model, version) (mlfleet_replica_info)", "{{model}} {{version}}"),
            )
        )
        .with_panel(
            ts(
                "Load-balancer servers per state",
                "HAProxy servers of each model backend by state.",
                "none",
                query("sum by (proxy, state) (haproxy_server_status == 1)", "{{proxy}} {{state}}"),
            )
        )
    )


def serving():
    ok = f"rate(model_infer_request_success_total{{{MODEL}}}[$__rate_interval])"
    failed = f"rate(model_infer_request_failure_total{{{MODEL}}}[$__rate_interval])"
    buckets = f'rate(rest_server_request_duration_seconds_bucket{{{MODEL}, path=~".*/infer"}}[$__rate_interval])'

    def quantile(q: float) -> str:
        return f"histogram_quantile({q}, sum by (model, version, le) ({by_running_version(buckets)}))"

    return (
        board(
            "mlfleet-serving", "mlfleet / Model serving", "Requests, errors, latency and saturation per model version."
        )
        .with_variable(variable("model", "Model", "label_values(mlfleet_replica_info, model)"))
        .annotation(version_changes())
        .with_panel(
            ts(
                "Inferences per second",
                "Successful inference requests per version (the model server's own counter).",
                "reqps",
                query(f"sum by (model, version) ({by_running_version(ok)})", "{{model}} {{version}}"),
            )
        )
        .with_panel(
            ts(
                "Error ratio",
                "Failed inference requests over all requests, per version.",
                "percentunit",
                query(
                    f"sum by (model, version) ({by_running_version(failed)}) / "
                    f"sum by (model, version) ({by_running_version(f'{ok} + {failed}')})",
                    "{{model}} {{version}}",
                ),
            )
        )
        .with_panel(
            ts(
                "Inference latency p50 / p95 / p99",
                "From the REST request-duration histogram of the inference path, per version.",
                "s",
                query(quantile(0.5), "p50 {{model}} {{version}}", "A"),
                query(quantile(0.95), "p95 {{model}} {{version}}", "B"),
                query(quantile(0.99), "p99 {{model}} {{version}}", "C"),
            )
        )
        .with_panel(
            heatmap.Panel()
            .title("Inference latency distribution")
            .datasource(DS)
            .span(12)
            .height(8)
            .description("The request-duration histogram of the inference path, all versions.")
            .with_target(query(f"sum by (le) ({buckets})", "{{le}}", fmt=PromQueryFormat.HEATMAP))
        )  # fmt: skip
        .with_panel(
            ts(
                "Requests in flight per replica",
                "Saturation: requests the model server is working on, per replica.",
                "none",
                query(
                    f"sum by (host, container) (rest_server_requests_in_progress{{{MODEL}}})", "{{host}} {{container}}"
                ),
            )
        )
        .with_panel(
            ts(
                "Load-balancer queue and sessions",
                "Saturation at the load balancer: requests queued for a free server, and open sessions.",
                "none",
                query('sum by (proxy) (haproxy_backend_current_queue{proxy=~"$model"})', "queued {{proxy}}", "A"),
                query('sum by (proxy) (haproxy_backend_current_sessions{proxy=~"$model"})', "sessions {{proxy}}", "B"),
            )
        )
        .with_panel(
            ts(
                "Replicas answering",
                "1 when Prometheus could scrape the replica, 0 when not (ModelServerDown).",
                "none",
                query(f'max by (host, container) (up{{job="model", {MODEL}}})', "{{host}} {{container}}"),
            )
        )
    )


def gpu():
    return (
        board("mlfleet-gpu", "mlfleet / GPUs", "DCGM telemetry per GPU, joined to the replica that runs on it.")
        .with_variable(variable("host", "Host", "label_values(DCGM_FI_DEV_GPU_UTIL, host)"))
        .annotation(version_changes())
        .with_panel(
            ts(
                "GPU utilisation per replica",
                "DCGM_FI_DEV_GPU_UTIL of each GPU a replica runs on (mlfleet:replica_gpu_utilization:percent).",
                "percent",
                query(
                    "max by (host, gpu, container, model, version)"
                    ' (mlfleet:replica_gpu_utilization:percent{host=~"$host"})',
                    "{{host}} GPU {{gpu}} {{container}} ({{model}} {{version}})",
                ),
            )
        )
        .with_panel(
            ts(
                "GPU memory used per replica",
                "Frame-buffer memory used on each GPU of a replica (mlfleet:replica_gpu_memory_used:mib).",
                "mbytes",
                query(
                    'max by (host, gpu, container) (mlfleet:replica_gpu_memory_used:mib{host=~"$host"})',
                    "{{host}} GPU {{gpu}} {{container}}",
                ),
            )
        )
        .with_panel(
            ts(
                "GPU temperature",
                "Every GPU, serving or idle (DCGM_FI_DEV_GPU_TEMP); GPUTemperatureHigh fires above the role's limit.",
                "celsius",
                query('max by (host, gpu) (DCGM_FI_DEV_GPU_TEMP{host=~"$host"})', "{{host}} GPU {{gpu}}"),
            )
        )
        .with_panel(
            ts(
                "GPU utilisation, every GPU",
                "Idle GPUs show here and not above: capacity a replica could use.",
                "percent",
                query('max by (host, gpu) (DCGM_FI_DEV_GPU_UTIL{host=~"$host"})', "{{host}} GPU {{gpu}}"),
            )
        )
        .with_panel(
            tab(
                "XID errors",
                "The last XID error code DCGM reported per GPU (0: none); GPUXidErrors fires on any.",
                'max by (host, gpu) (DCGM_FI_DEV_XID_ERRORS{host=~"$host"})',
                h=6,
            )
        )
    )


def drift():
    return (
        board("mlfleet-drift", "mlfleet / Drift", "Configuration drift per host and the health of the drift runs.")
        .with_panel(
            big(
                "Hosts drifted",
                "Hosts whose last check found changes.",
                "count(mlfleet_drift_changes > 0) or vector(0)",
                w=6,
            )
        )
        .with_panel(
            big(
                "Hosts unreachable",
                "Hosts the last run could not check.",
                "sum(mlfleet_drift_unreachable) or vector(0)",
                w=6,
            )
        )
        .with_panel(
            big(
                "Last run succeeded",
                "1 when the last drift run covered every host.",
                "min(mlfleet_drift_run_success)",
                w=6,
            )
        )
        .with_panel(
            big(
                "Since the last successful run",
                "DriftRunStale fires when this passes prometheus_drift_max_age_seconds.",
                "time() - max(mlfleet_drift_last_success_timestamp_seconds)",
                unit="s",
                w=6,
            )
        )
        .with_panel(
            ts(
                "Changes found per host",
                "Tasks that would change each host in the last check (0: as configured).",
                "none",
                query("max by (host) (mlfleet_drift_changes)", "{{host}}"),
                w=24,
            )
        )
    )


DASHBOARDS = {"fleet": fleet, "serving": serving, "gpu": gpu, "drift": drift}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        f"mlfleet-{name}.json": json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when a written dashboard is out of date")
    parser.add_argument("--out", type=Path, default=OUT, help="folder of the JSON files (default: the role's)")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date (run `make dashboards`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
