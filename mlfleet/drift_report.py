"""Turn ansible-runner events of a ``--check --diff`` run into a drift report, and render it.

Pure and typed on purpose: no ansible-runner or ansible import, no I/O. ``mlfleet.drift`` feeds the
events it receives from ``ansible_runner.run(event_handler=...)`` into an :class:`EventCollector`;
the unit tests feed recorded event dicts. Everything that leaves this module (JSON, Markdown,
JUnit XML, Prometheus text, Alertmanager alerts) goes through :class:`Masker` first.

Event shapes are those of ansible-runner's ``awx_display`` callback (ansible-runner 2.4):
https://ansible.readthedocs.io/projects/runner/en/latest/intro/#runner-artifact-job-events-host-and-playbook-events
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree as ET

SCHEMA_VERSION = 1
MASK = "********"
# Variable names whose values never appear in a report (diff lines "name: value" / "name=value",
# extra vars, environment variables in ansible-runner's `command` file).
SECRET_NAME = re.compile(r"(?i)(password|passwd|secret|token|key)")
# A diff line that assigns a value to a secret-looking name: keep the name, mask the value.
_SECRET_ASSIGNMENT = re.compile(
    r"""(?im)^([+\- ]?[ \t]*["']?[\w.-]*(?:password|passwd|secret|token|key)[\w.-]*["']?[ \t]*[:=][ \t]*)(\S.*)$"""
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# The default callback's status line of a result ("changed: [gpu-1]"), after a possible TASK banner.
_CHANGED_LINE = re.compile(r"(?m)^\s*changed: \[")
# What the awx_display callback puts in place of a no_log result (the real result never reaches us).
CENSORED_KEY = "censored"
NO_LOG_NOTE = "(hidden: the task has no_log: true)"
_MSG_LIMIT = 2000
_DIFF_LIMIT = 20000
# Secrets shorter than this are not searched for: masking every "1" or "on" would shred reports.
MIN_SECRET_LEN = 4

# Exit codes of `python -m mlfleet.drift` (also in its --help).
EXIT_CLEAN = 0
EXIT_FAILED = 1
EXIT_DRIFT = 2
# Not run: another drift run (timer or manual) holds the lock. Not a success: systemd marks the unit
# failed and the stale-run alert fires if it lasts.
EXIT_LOCKED = 3


class Masker:
    """Replaces known secret values, and values assigned to secret-looking names, in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for value in secrets:
            if not isinstance(value, str) or len(value) < MIN_SECRET_LEN:
                continue
            forms.add(value)
            # The same value as it appears inside a JSON string (job_events/*.json, command).
            forms.add(json.dumps(value)[1:-1])
            forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
        # Longest first, so that a secret containing another is replaced whole.
        self.secrets: tuple[str, ...] = tuple(sorted(forms, key=len, reverse=True))

    def text(self, value: str) -> str:
        for secret in self.secrets:
            value = value.replace(secret, MASK)
        return value

    def diff(self, value: str) -> str:
        return _SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + MASK, self.text(value))

    def env(self, env: Mapping[str, str]) -> dict[str, str]:
        return {k: (MASK if SECRET_NAME.search(k) else self.text(str(v))) for k, v in env.items()}


def secret_values(data: Any, *, all_values: bool = False, _name: str = "") -> list[str]:
    """String values of ``data`` (extra vars) stored under a secret-looking name or a ``vault_*`` name.

    ``all_values`` treats every string as secret (a vault-encrypted vars file).
    """
    found: list[str] = []
    secret = all_values or bool(SECRET_NAME.search(_name)) or _name.startswith("vault_")
    if isinstance(data, Mapping):
        for key, value in data.items():
            found += secret_values(value, all_values=secret, _name=str(key))
    elif isinstance(data, list | tuple):
        for value in data:
            found += secret_values(value, all_values=secret, _name=_name)
    elif isinstance(data, str | int | float) and not isinstance(data, bool) and secret:
        found.append(str(data))
    return found


# --- Report model -----------------------------------------------------------------------------


@dataclass
class Change:
    """A task that would change a host: drift (or, in a remediation run, what was changed)."""

    task: str
    role: str | None
    action: str | None
    play: str | None
    task_path: str | None
    diff: str
    items: list[str] = field(default_factory=list)
    no_log: bool = False
    handler: bool = False


@dataclass
class Failure:
    task: str
    role: str | None
    action: str | None
    msg: str
    rescued: bool = False


@dataclass
class HostReport:
    name: str
    changes: list[Change] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    unreachable: str | None = None
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def drift(self) -> list[Change]:
        """Changes of tasks; handlers only run because a task changed, so they are not drift themselves."""
        return [c for c in self.changes if not c.handler]

    @property
    def failed(self) -> list[Failure]:
        return [f for f in self.failures if not f.rescued]

    @property
    def status(self) -> str:
        if self.unreachable is not None:
            return "unreachable"
        if self.failed:
            return "failed"
        return "drift" if self.drift else "clean"


@dataclass
class RunReport:
    """One ansible-runner run: ``check``, ``remediate`` or ``recheck``."""

    phase: str
    ident: str
    rc: int | None
    runner_status: str
    artifact_dir: str
    limit: str | None
    hosts: dict[str, HostReport] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """The run itself did not work: a host unreachable or failed, or the playbook never ran."""
        if self.errors or self.runner_status != "successful" or self.rc not in (0, None):
            return True
        return any(h.status in ("unreachable", "failed") for h in self.hosts.values())

    @property
    def drifted_hosts(self) -> list[str]:
        return sorted(name for name, h in self.hosts.items() if h.drift)

    @property
    def change_count(self) -> int:
        return sum(len(h.drift) for h in self.hosts.values())


@dataclass
class DriftReport:
    playbook: str
    inventory: str
    limit: str | None
    tags: str | None
    started: str
    finished: str = ""
    remediate: bool = False
    runs: list[RunReport] = field(default_factory=list)
    webhook: dict[str, Any] | None = None
    # Errors of the tool itself (a bad option, an unreadable file, SIGTERM, a crash): the run failed
    # whatever the runs say.
    errors: list[str] = field(default_factory=list)
    # Report folders of earlier runs that were killed before they finished (SIGKILL, out of memory,
    # power loss): this run removed their raw artifacts and wrote them a failed report.
    healed: list[str] = field(default_factory=list)

    @property
    def final_check(self) -> RunReport | None:
        """The fleet as last checked. A recheck looks again only at the hosts the remediation changed:
        each of those is as the recheck found it, every other host as the check found it."""
        checks = [r for r in self.runs if r.phase in ("check", "recheck")]
        if len(checks) < 2:
            return checks[0] if checks else None
        first, last = checks[0], checks[-1]
        return replace(last, hosts={**first.hosts, **last.hosts}, errors=first.errors + last.errors)

    @property
    def exit_code(self) -> int:
        final = self.final_check
        if self.errors or final is None or final.failed:
            return EXIT_FAILED
        if any(r.failed for r in self.runs if r.phase == "remediate"):
            return EXIT_FAILED
        return EXIT_DRIFT if final.drifted_hosts else EXIT_CLEAN

    @property
    def result(self) -> str:
        return {EXIT_CLEAN: "clean", EXIT_DRIFT: "drift", EXIT_FAILED: "failed"}[self.exit_code]


# --- Events -> report -------------------------------------------------------------------------


def _clean(text: Any, masker: Masker, limit: int = _MSG_LIMIT) -> str:
    value = masker.text(_ANSI.sub("", str(text if text is not None else "")))
    return value if len(value) <= limit else value[:limit] + " …(truncated)"


def _render_side(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [f"{k}: {json.dumps(v) if not isinstance(v, str) else v}\n" for k, v in sorted(value.items())]
    text = str(value)
    return text.splitlines(keepends=True) if text else []


def render_diff(diff: Any) -> str:
    """Ansible's diff structure (dict or list of dicts, as with ``--diff``) as unified diff text."""
    parts: list[str] = []
    for entry in diff if isinstance(diff, list) else [diff]:
        if not isinstance(entry, Mapping):
            continue
        if entry.get("prepared"):
            parts.append(str(entry["prepared"]).rstrip("\n") + "\n")
            continue
        before, after = _render_side(entry.get("before")), _render_side(entry.get("after"))
        if before == after:
            continue
        lines = difflib.unified_diff(
            before,
            after,
            fromfile=f"before: {entry['before_header']}" if entry.get("before_header") else "before",
            tofile=f"after: {entry['after_header']}" if entry.get("after_header") else "after",
        )
        parts.append(
            "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
        )
    return "".join(parts)


class EventCollector:
    """Accumulates ansible-runner events of one run; :meth:`build` returns its :class:`RunReport`."""

    def __init__(self, masker: Masker | None = None) -> None:
        self.masker = masker or Masker()
        self.hosts: dict[str, HostReport] = {}
        self._handler_tasks: set[str] = set()
        self._stats: dict[str, dict[str, int]] | None = None
        self._log: list[str] = []

    def _host(self, name: str) -> HostReport:
        return self.hosts.setdefault(name, HostReport(name=name))

    def feed(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event", "")
        data: Mapping[str, Any] = event.get("event_data") or {}
        if kind == "playbook_on_task_start" and data.get("is_conditional") and data.get("task_uuid"):
            # ansible-runner reports a handler's start as playbook_on_task_start with is_conditional=True
            # (the Ansible 1.x marker); there is no playbook_on_handler_task_start event.
            self._handler_tasks.add(data["task_uuid"])
        elif kind == "runner_on_ok":
            self._on_ok(event, data)
        elif kind == "runner_on_failed":
            if not data.get("ignore_errors"):
                res = data.get("res") or {}
                msg = NO_LOG_NOTE if CENSORED_KEY in res else res.get("msg") or res.get("stderr") or "failed"
                self._host(data["host"]).failures.append(
                    Failure(
                        task=str(data.get("task") or ""),
                        role=data.get("role"),
                        action=data.get("resolved_action") or data.get("task_action"),
                        msg=_clean(msg, self.masker),
                    )
                )
        elif kind == "runner_on_unreachable":
            host = self._host(data["host"])
            if host.unreachable is None:
                host.unreachable = _clean((data.get("res") or {}).get("msg") or "unreachable", self.masker)
        elif kind == "playbook_on_stats":
            self._stats = {
                key: dict(data.get(key) or {})
                for key in ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored", "processed")
            }
        elif kind in ("error", "verbose", "warning") or (not kind.startswith("runner_") and "ERROR" in str(event)):
            for line in _ANSI.sub("", str(event.get("stdout") or "")).splitlines():
                if line.strip():
                    self._log.append(self.masker.text(line))
            del self._log[:-40]

    def _on_ok(self, event: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        res: Mapping[str, Any] = data.get("res") or {}
        if CENSORED_KEY in res:
            # no_log: the callback dropped the whole result, `changed` included; only the
            # default callback's one-line status ("changed: [host]") tells what happened.
            changed = bool(_CHANGED_LINE.search(_ANSI.sub("", str(event.get("stdout") or ""))))
            diff, items, no_log = NO_LOG_NOTE, [], True
        else:
            changed = bool(res.get("changed"))
            diff, items, no_log = self._diff_of(res)
        if not changed:
            return
        self._host(data["host"]).changes.append(
            Change(
                task=str(data.get("task") or ""),
                role=data.get("role"),
                action=data.get("resolved_action") or data.get("task_action"),
                play=data.get("play"),
                task_path=data.get("task_path"),
                diff=diff,
                items=items,
                no_log=no_log,
                handler=data.get("task_uuid") in self._handler_tasks,
            )
        )

    def _diff_of(self, res: Mapping[str, Any]) -> tuple[str, list[str], bool]:
        results = res.get("results")
        if not isinstance(results, list):
            text = self.masker.diff(render_diff(res.get("diff"))) if res.get("diff") else ""
            return text[:_DIFF_LIMIT], [], False
        parts: list[str] = []
        items: list[str] = []
        no_log = False
        for item in results:
            if not isinstance(item, Mapping) or not item.get("changed") and CENSORED_KEY not in item:
                continue
            if CENSORED_KEY in item:
                no_log = True
                items.append(NO_LOG_NOTE)
                parts.append(f"# item: {NO_LOG_NOTE}\n")
                continue
            label = self.masker.text(str(item.get("_ansible_item_label", item.get("item", ""))))
            items.append(label)
            body = self.masker.diff(render_diff(item.get("diff"))) if item.get("diff") else ""
            parts.append(f"# item: {label}\n{body}")
        return "".join(parts)[:_DIFF_LIMIT], items, no_log

    def build(
        self, *, phase: str, ident: str, rc: int | None, runner_status: str, artifact_dir: str, limit: str | None
    ) -> RunReport:
        run = RunReport(
            phase=phase, ident=ident, rc=rc, runner_status=runner_status, artifact_dir=artifact_dir, limit=limit
        )
        if self._stats is not None:
            for key, per_host in self._stats.items():
                for name, count in per_host.items():
                    self._host(name).stats[key] = int(count)
            for host in self.hosts.values():
                # A failure a `rescue:` handled still sends runner_on_failed; the stats do not count it.
                if host.failures and not host.stats.get("failures"):
                    for failure in host.failures:
                        failure.rescued = True
        run.hosts = dict(sorted(self.hosts.items()))
        explained = any(h.status in ("unreachable", "failed") for h in run.hosts.values())
        unexplained = not explained and (rc not in (0, None) or runner_status != "successful")
        if self._stats is None or unexplained or runner_status in ("timeout", "canceled"):
            reason = f"ansible-playbook ended with rc={rc}, runner status {runner_status!r}"
            if self._stats is None:
                reason += " before the play recap (no play ran to the end)"
            run.errors.append(reason)
            run.errors += [line for line in self._log if "ERROR" in line.upper()][-10:] or self._log[-5:]
        return run


# --- Renderers --------------------------------------------------------------------------------


def to_dict(report: DriftReport) -> dict[str, Any]:
    runs = []
    for run in report.runs:
        data = asdict(run)
        for name, host in run.hosts.items():
            data["hosts"][name]["status"] = host.status
        data["failed"] = run.failed
        data["drifted_hosts"] = run.drifted_hosts
        runs.append(data)
    final = report.final_check
    return {
        "schema": SCHEMA_VERSION,
        "tool": "mlfleet.drift",
        "result": report.result,
        "exit_code": report.exit_code,
        "playbook": report.playbook,
        "inventory": report.inventory,
        "limit": report.limit,
        "tags": report.tags,
        "started": report.started,
        "finished": report.finished,
        "remediate": report.remediate,
        "summary": {
            name: {"status": host.status, "drift": len(host.drift), "failed": len(host.failed)}
            for name, host in (final.hosts.items() if final else [])
        },
        "runs": runs,
        "webhook": report.webhook,
        "errors": report.errors,
        "healed_runs": report.healed,
    }


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ") if value not in (None, "") else "—"


def _fence(text: str, lang: str = "") -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}\n"


_PHASE_TITLE = {"check": "Check (--check --diff)", "remediate": "Remediation (real run)", "recheck": "Re-check"}


def to_markdown(report: DriftReport) -> str:
    out = [
        "# Configuration drift report",
        "",
        f"- **Result:** {report.result} (exit code {report.exit_code})",
        f"- **Playbook:** `{report.playbook}` on inventory `{report.inventory}`",
        f"- **Limit:** {_md_cell(report.limit)} · **Tags:** {_md_cell(report.tags)}",
        f"- **Started:** {report.started} · **Finished:** {report.finished}",
    ]
    if report.webhook:
        state = "delivered" if report.webhook.get("ok") else f"NOT delivered: {report.webhook.get('error')}"
        out.append(f"- **Webhook:** {report.webhook.get('target')} ({report.webhook.get('format')}): {state}")
    for error in report.errors:
        out += ["", f"> **Error:** {error}"]
    if report.healed:
        out += ["", f"- **Killed earlier runs cleaned up:** {', '.join(f'`{n}`' for n in report.healed)}"]
    for run in report.runs:
        out += ["", f"## {_PHASE_TITLE.get(run.phase, run.phase)}", ""]
        if run.limit:
            out += [f"Limited to: `{run.limit}`", ""]
        verb = "Changed" if run.phase == "remediate" else "Drifted"
        out += [f"| Host | Status | {verb} tasks | Failed tasks | Unreachable |", "|---|---|---|---|---|"]
        for name, host in run.hosts.items():
            changes = host.changes if run.phase == "remediate" else host.drift
            out.append(
                f"| {_md_cell(name)} | {host.status.upper() if host.status != 'clean' else 'clean'} | "
                f"{len(changes)} | {len(host.failed)} | {_md_cell(host.unreachable)} |"
            )
        if not run.hosts:
            out.append("| — | no host ran | 0 | 0 | — |")
        for error in run.errors:
            out += ["", f"> **Run error:** {error}"]
        for name, host in run.hosts.items():
            changes = host.changes if run.phase == "remediate" else host.drift
            if not (changes or host.failed or host.unreachable):
                continue
            out += ["", f"### {name}", ""]
            if host.unreachable:
                out += [f"**Unreachable:** {host.unreachable}", ""]
            for failure in host.failed:
                out += [f"**Failed:** `{failure.task}` (role {_md_cell(failure.role)}, `{failure.action}`)", ""]
                out.append(_fence(failure.msg))
            for change in changes:
                where = f"role {_md_cell(change.role)}, `{change.action}`"
                tag = " — handler" if change.handler else ""
                out += [f"**{verb}:** `{change.task}` ({where}){tag}", ""]
                if change.items:
                    out += [f"Items: {', '.join(f'`{i}`' for i in change.items)}", ""]
                out.append(_fence(change.diff, "diff") if change.diff else "_(the module reported no diff)_\n")
    return "\n".join(out).rstrip() + "\n"


def to_junit(report: DriftReport) -> str:
    """The final check as JUnit: one failure per drifted task, one error per failed task or unreachable host."""
    final = report.final_check
    suites = ET.Element("testsuites", name="mlfleet-drift")
    suite = ET.SubElement(suites, "testsuite", name=f"drift {report.playbook}", timestamp=report.started)
    tests = failures = errors = 0
    for name, host in (final.hosts if final else {}).items():
        if host.unreachable is not None:
            case = ET.SubElement(suite, "testcase", classname=name, name="host is reachable")
            ET.SubElement(case, "error", message="unreachable", type="unreachable").text = host.unreachable
            tests, errors = tests + 1, errors + 1
        for failure in host.failed:
            case = ET.SubElement(suite, "testcase", classname=name, name=failure.task)
            ET.SubElement(case, "error", message="task failed", type="failed").text = failure.msg
            tests, errors = tests + 1, errors + 1
        for change in host.drift:
            case = ET.SubElement(suite, "testcase", classname=name, name=change.task)
            message = f"drift: {change.action} would change the host"
            ET.SubElement(case, "failure", message=message, type="drift").text = change.diff
            tests, failures = tests + 1, failures + 1
        if host.status == "clean":
            ET.SubElement(suite, "testcase", classname=name, name="no drift")
            tests += 1
    if final is None or final.errors or report.errors:
        case = ET.SubElement(suite, "testcase", classname="ansible-playbook", name="playbook ran")
        lines = report.errors + (final.errors if final else ["no check ran"])
        ET.SubElement(case, "error", message="run error").text = "\n".join(lines)
        tests, errors = tests + 1, errors + 1
    for element in (suites, suite):
        element.set("tests", str(tests))
        element.set("failures", str(failures))
        element.set("errors", str(errors))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def last_success_of(textfile: str) -> float | None:
    """``mlfleet_drift_last_success_timestamp_seconds`` of an earlier textfile, if it has one."""
    for line in textfile.splitlines():
        name, _, value = line.partition(" ")
        if name == "mlfleet_drift_last_success_timestamp_seconds":
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _label(value: str) -> str:
    # https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def to_prometheus(report: DriftReport, now: datetime, last_success: float | None = None) -> str:
    """The node-exporter textfile. ``last_success``: when an earlier run last succeeded (read back from
    the previous file); a successful run replaces it with ``now``."""
    final = report.final_check
    hosts = final.hosts if final else {}
    out: list[str] = []

    def metric(name: str, help_text: str, samples: Sequence[tuple[str | None, float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} gauge")
        for host, value in samples:
            labels = f'{{host="{_label(host)}"}}' if host is not None else ""
            out.append(f"{name}{labels} {int(value) if float(value).is_integer() else value}")

    metric(
        "mlfleet_drift_changes",
        "Tasks that would change the host (check mode) in the last drift run.",
        [(n, len(h.drift)) for n, h in hosts.items()],
    )
    metric(
        "mlfleet_drift_unreachable",
        "1 if the host was unreachable in the last drift run.",
        [(n, int(h.unreachable is not None)) for n, h in hosts.items()],
    )
    metric(
        "mlfleet_drift_failed",
        "Tasks that failed on the host in the last drift run.",
        [(n, len(h.failed)) for n, h in hosts.items()],
    )
    metric(
        "mlfleet_drift_last_run_timestamp_seconds",
        "When the last drift run finished (Unix time).",
        [(None, int(now.timestamp()))],
    )
    metric(
        "mlfleet_drift_run_success",
        "1 if the last drift run covered every host (drift or not), 0 if the run itself failed.",
        [(None, int(report.exit_code != EXIT_FAILED))],
    )
    if report.exit_code != EXIT_FAILED:
        last_success = now.timestamp()
    if last_success is not None:
        metric(
            "mlfleet_drift_last_success_timestamp_seconds",
            "When a drift run last covered every host (Unix time); kept across failed runs.",
            [(None, int(last_success))],
        )
    return "\n".join(out) + "\n"


def to_alertmanager(report: DriftReport, now: datetime, ttl: timedelta, report_url: str | None = None) -> list[dict]:
    """Alerts in Alertmanager's API v2 ``POST /api/v2/alerts`` shape (postableAlerts).

    ``endsAt`` is set so that an alert the next run does not repeat resolves by itself; without it
    Alertmanager resolves after its ``resolve_timeout`` (5 min by default), long before the next run.
    https://github.com/prometheus/alertmanager/blob/main/api/v2/openapi.yaml
    """
    final = report.final_check
    starts, ends = now.astimezone(UTC).isoformat(), (now + ttl).astimezone(UTC).isoformat()
    alerts: list[dict] = []

    def alert(name: str, host: str, task: str, summary: str, description: str, severity: str) -> None:
        entry: dict[str, Any] = {
            "labels": {"alertname": name, "host": host, "task": task, "severity": severity, "source": "mlfleet-drift"},
            "annotations": {"summary": summary, "description": description[:4000]},
            "startsAt": starts,
            "endsAt": ends,
        }
        if report_url:
            entry["generatorURL"] = report_url
        alerts.append(entry)

    for name, host in (final.hosts if final else {}).items():
        for change in host.drift:
            alert(
                "ConfigDriftDetected",
                name,
                change.task,
                f"{name}: '{change.task}' would change the host",
                change.diff or "(no diff)",
                "warning",
            )
        if host.unreachable is not None:
            alert("ConfigDriftCheckFailed", name, "", f"{name} was unreachable", host.unreachable, "critical")
        for failure in host.failed:
            alert(
                "ConfigDriftCheckFailed",
                name,
                failure.task,
                f"{name}: '{failure.task}' failed",
                failure.msg,
                "critical",
            )
    return alerts
