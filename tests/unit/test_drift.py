"""Drift run: the event -> report logic on recorded events, and real runs of the tool on localhost.

The end-to-end half runs ``python -m mlfleet.drift`` (which drives ansible-runner's Python API) with
the repository's ansible.cfg against a throwaway playbook that manages files under tmp_path through
``connection: local``. A vault-encrypted vars file plants a secret that must reach no file the
tool writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from mlfleet.drift_report import (
    MASK,
    NO_LOG_NOTE,
    DriftReport,
    EventCollector,
    Masker,
    last_success_of,
    secret_values,
    to_alertmanager,
    to_dict,
    to_junit,
    to_markdown,
    to_prometheus,
)

ROOT = Path(__file__).resolve().parents[2]
PLANTED = "Pl4nted-S3cret-9f2c7e"
VAULT_PASSWORD = "vault-pw-for-tests-only-42"
CENSORED = "the output has been hidden due to the fact that 'no_log: true' was specified for this result"


# --- Recorded events (ansible-runner 2.4.3 + ansible-core 2.19, trimmed to the keys used) ------


def ev(event, host=None, task=None, res=None, stdout="", **data):
    event_data = {"host": host, "task": task, "task_action": "ansible.builtin.copy", "play": "all", **data}
    if res is not None:
        event_data["res"] = res
    return {"event": event, "stdout": stdout, "event_data": event_data}


DIFF_EVENT = ev(
    "runner_on_ok",
    "loc",
    "Manage file",
    res={
        "diff": [{"before": "", "after_header": "/tmp/dx/f.txt", "after": "hello\n"}],
        "changed": True,
        "_ansible_no_log": False,
    },
    stdout="changed: [loc]",
    role="baseline",
    resolved_action="ansible.builtin.copy",
    task_uuid="u-1",
)
NO_LOG_EVENT = ev("runner_on_ok", "loc", "Secret file", res={"censored": CENSORED}, stdout="changed: [loc]")
NO_LOG_OK_EVENT = ev("runner_on_ok", "loc", "Secret file again", res={"censored": CENSORED}, stdout="ok: [loc]")
LOOP_EVENT = ev(
    "runner_on_ok",
    "loc",
    "loop",
    res={
        "changed": True,
        "results": [
            {"diff": [{"before": "", "after": "a\n"}], "changed": True, "item": "a", "_ansible_item_label": "a"},
            {"changed": False, "item": "b", "_ansible_item_label": "b"},
            {"censored": CENSORED},
        ],
    },
)
IGNORED_FAILURE = ev(
    "runner_on_failed", "loc", "fail", res={"msg": "non-zero return code", "rc": 1}, ignore_errors=True
)
UNREACHABLE = ev(
    "runner_on_unreachable",
    "bad",
    "Manage file",
    res={"unreachable": True, "msg": "Failed to connect to the host via ssh: Connection refused"},
)


def stats(**per_key):
    return ev("playbook_on_stats", **{k: per_key.get(k, {}) for k in ("ok", "changed", "failures", "dark")})


def collect(events, secrets=(), rc=0, status="successful"):
    collector = EventCollector(Masker(secrets))
    for event in events:
        collector.feed(event)
    return collector.build(phase="check", ident="t", rc=rc, runner_status=status, artifact_dir="a", limit=None)


def report_of(*runs):
    report = DriftReport(playbook="pb.yml", inventory="inv", limit=None, tags=None, started="2025-01-01T00:00:00Z")
    report.runs.extend(runs)
    return report


def test_changed_tasks_are_drift_with_their_diff_and_role():
    run = collect([DIFF_EVENT, NO_LOG_OK_EVENT, IGNORED_FAILURE, stats(ok={"loc": 3}, changed={"loc": 1})])
    host = run.hosts["loc"]
    assert host.status == "drift"
    assert [(c.task, c.role, c.action) for c in host.drift] == [("Manage file", "baseline", "ansible.builtin.copy")]
    assert "+++ after: /tmp/dx/f.txt" in host.drift[0].diff and "+hello" in host.drift[0].diff
    assert host.failures == [] and not run.failed
    assert report_of(run).exit_code == 2


def test_a_no_log_change_is_drift_but_shows_nothing():
    run = collect([NO_LOG_EVENT, stats(changed={"loc": 1})])
    (change,) = run.hosts["loc"].drift
    assert change.no_log and change.diff == NO_LOG_NOTE


def test_loop_items_list_only_the_changed_ones_and_hide_no_log_items():
    (change,) = collect([LOOP_EVENT, stats(changed={"loc": 1})]).hosts["loc"].drift
    assert change.items == ["a", NO_LOG_NOTE]
    assert "+a" in change.diff and "item: b" not in change.diff


def test_unreachable_and_failed_hosts_fail_the_run_and_keep_the_rest():
    failed = ev("runner_on_failed", "gpu-1", "Start it", res={"msg": f"boom {PLANTED}"}, ignore_errors=False)
    run = collect(
        [UNREACHABLE, failed, DIFF_EVENT, stats(dark={"bad": 1}, failures={"gpu-1": 1}, changed={"loc": 1})],
        secrets=[PLANTED],
        rc=4,
        status="failed",
    )
    assert {n: h.status for n, h in run.hosts.items()} == {"bad": "unreachable", "gpu-1": "failed", "loc": "drift"}
    assert "Connection refused" in run.hosts["bad"].unreachable
    assert run.hosts["gpu-1"].failed[0].msg == f"boom {MASK}"
    assert run.failed and run.errors == []  # rc=4 is explained by the hosts
    assert report_of(run).exit_code == 1


def test_a_rescued_failure_is_not_a_failure():
    failed = ev("runner_on_failed", "loc", "Try it", res={"msg": "no"}, ignore_errors=False)
    run = collect([failed, stats(ok={"loc": 2}, failures={}, rescued={"loc": 1})])
    assert run.hosts["loc"].status == "clean" and not run.failed


def test_a_handler_change_is_not_drift():
    # As ansible-runner 2.4 emits it (recorded from a lab run): a handler's start is a task start
    # with is_conditional=True.
    start = ev("playbook_on_task_start", task="Restart chrony", task_uuid="h-1", is_conditional=True)
    handler = ev("runner_on_ok", "loc", "Restart chrony", res={"changed": True}, task_uuid="h-1")
    run = collect([start, handler, stats(changed={"loc": 1})])
    assert run.hosts["loc"].changes[0].handler and run.hosts["loc"].status == "clean"


def test_a_playbook_that_never_ran_is_a_run_error():
    broken = {"event": "verbose", "stdout": "ERROR! conflicting action statements: copy, file", "event_data": {}}
    run = collect([broken], rc=1, status="failed")
    assert run.failed and any("conflicting action statements" in e for e in run.errors)
    assert report_of(run).exit_code == 1
    assert 'errors="1"' in to_junit(report_of(run))


def test_the_final_state_of_a_remediation_is_the_recheck_of_its_hosts_and_the_check_of_the_others():
    # The check: loc drifted, clean-1 is clean, bad is unreachable (not remediated: not changed blind).
    clean = ev("runner_on_ok", "clean-1", "Manage file", res={"changed": False})
    check = collect(
        [DIFF_EVENT, clean, UNREACHABLE, stats(ok={"clean-1": 1}, changed={"loc": 1}, dark={"bad": 1})],
        rc=4,
        status="failed",
    )
    fixed = ev("runner_on_ok", "loc", "Manage file", res={"changed": False})
    recheck = collect([fixed, stats(ok={"loc": 1})])
    recheck.phase, recheck.limit = "recheck", "loc"
    report = report_of(check, recheck)
    final = report.final_check
    assert {n: h.status for n, h in final.hosts.items()} == {"loc": "clean", "clean-1": "clean", "bad": "unreachable"}
    assert final.phase == "recheck" and final.limit == "loc"
    assert report.exit_code == 1  # bad was never reached
    assert to_dict(report)["summary"]["loc"]["status"] == "clean"
    prom = to_prometheus(report, datetime(2025, 1, 1, tzinfo=UTC))
    assert 'mlfleet_drift_changes{host="loc"} 0\n' in prom and 'mlfleet_drift_unreachable{host="bad"} 1\n' in prom
    # With every host reached, the remediated fleet is clean.
    check.hosts.pop("bad")
    check.rc, check.runner_status = 0, "successful"
    assert report.exit_code == 0
    # A host the recheck still finds drifting keeps the run at exit 2.
    recheck.hosts["loc"] = check.hosts["loc"]
    assert report.exit_code == 2


def test_masker_hides_known_values_and_secret_assignments_in_diffs():
    masker = Masker([PLANTED, "ab"])  # too short to search for: "ab" stays
    diff = f"+db_password: {PLANTED}x\n-api_token = t0k\n+listen: ab\n"
    assert masker.diff(diff) == f"+db_password: {MASK}\n-api_token = {MASK}\n+listen: ab\n"
    assert masker.env({"HOME": "/root", "AWS_SECRET_ACCESS_KEY": "x"}) == {
        "HOME": "/root",
        "AWS_SECRET_ACCESS_KEY": MASK,
    }


def test_secret_values_from_extra_vars():
    data = {"vault_db": "v1", "db_password": "v2", "plain": "v3", "api": {"token": ["v4"]}, "port": 5}
    assert sorted(secret_values(data)) == ["v1", "v2", "v4"]
    assert sorted(secret_values(data, all_values=True)) == ["5", "v1", "v2", "v3", "v4"]


def test_renderers():
    run = collect([UNREACHABLE, DIFF_EVENT, stats(dark={"bad": 1}, changed={"loc": 1})], rc=4, status="failed")
    report = report_of(run)
    now = datetime(2025, 1, 1, 6, 0, tzinfo=UTC)
    prom = to_prometheus(report, now)
    assert 'mlfleet_drift_changes{host="loc"} 1\n' in prom
    assert 'mlfleet_drift_unreachable{host="bad"} 1\n' in prom
    assert f"mlfleet_drift_last_run_timestamp_seconds {int(now.timestamp())}\n" in prom
    assert "mlfleet_drift_run_success 0\n" in prom
    alerts = to_alertmanager(report, now, timedelta(hours=26))
    drift = [a for a in alerts if a["labels"]["alertname"] == "ConfigDriftDetected"]
    assert [(a["labels"]["host"], a["labels"]["task"]) for a in drift] == [("loc", "Manage file")]
    assert drift[0]["endsAt"] == "2025-01-02T08:00:00+00:00"
    assert {a["labels"]["alertname"] for a in alerts} == {"ConfigDriftDetected", "ConfigDriftCheckFailed"}
    markdown = to_markdown(report)
    assert "| loc | DRIFT | 1 | 0 | — |" in markdown and "```diff" in markdown
    assert to_dict(report)["summary"]["bad"]["status"] == "unreachable"


# --- End to end through ansible-runner on localhost --------------------------------------------

PLAYBOOK = """\
- name: Drift test
  hosts: all
  gather_facts: false
  vars:
    app_password: "{{ vault_app_password }}"
  tasks:
    - name: Write the managed file
      ansible.builtin.copy:
        content: "setting = 1\\n"
        dest: "{{ base }}/managed.conf"
        mode: "0644"
    - name: Write the secret file
      ansible.builtin.copy:
        content: "{{ app_password }}\\n"
        dest: "{{ base }}/secret.conf"
        mode: "0600"
      no_log: true
    - name: Write the token file
      ansible.builtin.copy:
        content: "api_token = {{ app_password }}\\nuser = app\\n"
        dest: "{{ base }}/token.conf"
        mode: "0600"
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    base = tmp_path_factory.mktemp("drift")
    (base / "state").mkdir()
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "base": str(base / "state")}
    unreachable = {"ansible_host": "127.0.0.2", "ansible_port": 1, "ansible_connection": "ssh", "base": "/nonexistent"}
    (base / "hosts.json").write_text(json.dumps({"all": {"hosts": {"drift-local": host}}}))
    (base / "hosts-bad.json").write_text(json.dumps({"all": {"hosts": {"drift-local": host, "gone": unreachable}}}))
    (base / "site.yml").write_text(PLAYBOOK)
    (base / "vault-pass").write_text(VAULT_PASSWORD + "\n")
    secrets = base / "secrets.yml"
    secrets.write_text(f"vault_app_password: {PLANTED}\n")
    subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-vault"),
            "encrypt",
            "--vault-password-file",
            "vault-pass",
            str(secrets),
        ],
        cwd=base,
        check=True,
        capture_output=True,
    )
    assert PLANTED not in secrets.read_text()
    (base / "metrics").mkdir()
    lab = {"base": base, "state": base / "state", "artifacts": base / "artifacts", "metrics": base / "metrics"}
    converge(lab)
    return lab


def converge(lab):
    """The state the playbook would write (faster than a real run; test (a) proves it is converged)."""
    for name, content, mode in (
        ("managed.conf", "setting = 1\n", 0o644),
        ("secret.conf", f"{PLANTED}\n", 0o600),
        ("token.conf", f"api_token = {PLANTED}\nuser = app\n", 0o600),
    ):
        (lab["state"] / name).write_text(content)
        (lab["state"] / name).chmod(mode)


def drift_command(lab, *extra, inventory="hosts.json", playbook="site.yml"):
    base = lab["base"]
    cmd = [sys.executable, "-m", "mlfleet.drift", "-p", str(base / playbook), "-i", str(base / inventory)]
    cmd += ["-e", str(base / "secrets.yml"), "--vault-password-file", str(base / "vault-pass")]
    cmd += ["--artifacts-dir", str(lab["artifacts"]), "--textfile-dir", str(lab["metrics"]), *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    # ansible-runner dumps the whole environment into artifacts/<ident>/command: the tool masks it.
    env["DRIFT_TEST_API_TOKEN"] = PLANTED
    return cmd, env


def drift(lab, *extra, **kwargs):
    cmd, env = drift_command(lab, *extra, **kwargs)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def assert_no_secret_in_any_file(lab, *secrets) -> int:
    """No planted secret (nor any of ``secrets``) in any file the tool wrote; returns how many were read."""
    scanned = 0
    for path in [*lab["artifacts"].rglob("*"), *lab["metrics"].rglob("*")]:
        if path.is_file():
            scanned += 1
            data = path.read_bytes()
            for secret in (PLANTED, VAULT_PASSWORD, *secrets):
                assert secret.encode() not in data, (path, secret)
    assert scanned > 0
    return scanned


def last_report(lab):
    folder = sorted(p for p in lab["artifacts"].iterdir() if p.is_dir())[-1]
    return folder, json.loads((folder / "report.json").read_text())


def metrics(lab):
    return (lab["metrics"] / "mlfleet_drift.prom").read_text()


def test_e2e_a_converged_host_has_no_drift(lab):
    res = drift(lab)
    assert res.returncode == 0, res.stdout + res.stderr
    _, report = last_report(lab)
    assert report["result"] == "clean"
    assert report["summary"] == {"drift-local": {"status": "clean", "drift": 0, "failed": 0}}


def test_e2e_a_hand_edit_is_reported_as_drift_of_exactly_that_task(lab):
    managed = lab["state"] / "managed.conf"
    managed.write_text("setting = 2\n")
    res = drift(lab)
    assert res.returncode == 2, res.stdout + res.stderr
    assert managed.read_text() == "setting = 2\n"  # check mode changed nothing
    folder, report = last_report(lab)
    (check,) = report["runs"]
    drifted = {(h, c["task"]) for h, host in check["hosts"].items() for c in host["changes"]}
    assert drifted == {("drift-local", "Write the managed file")}
    diff = check["hosts"]["drift-local"]["changes"][0]["diff"]
    assert "-setting = 2" in diff and "+setting = 1" in diff
    junit = ET.parse(folder / "report.junit.xml").getroot()
    failures = [(c.get("classname"), c.get("name")) for c in junit.iter("testcase") if c.find("failure") is not None]
    assert failures == [("drift-local", "Write the managed file")] and junit.get("failures") == "1"
    markdown = (folder / "report.md").read_text()
    assert "| drift-local | DRIFT | 1 | 0 | — |" in markdown and "`Write the managed file`" in markdown
    assert 'mlfleet_drift_changes{host="drift-local"} 1\n' in metrics(lab)
    assert "mlfleet_drift_run_success 1\n" in metrics(lab)


def test_e2e_remediate_restores_the_host_and_rechecks_clean(lab):
    managed = lab["state"] / "managed.conf"
    managed.write_text("setting = 3\n")
    res = drift(lab, "--remediate")
    assert res.returncode == 0, res.stdout + res.stderr
    assert managed.read_text() == "setting = 1\n"
    _, report = last_report(lab)
    assert [r["phase"] for r in report["runs"]] == ["check", "remediate", "recheck"]
    assert report["runs"][0]["drifted_hosts"] == ["drift-local"]
    assert report["runs"][1]["limit"] == "drift-local"
    assert report["runs"][2]["hosts"]["drift-local"]["status"] == "clean"
    assert 'mlfleet_drift_changes{host="drift-local"} 0\n' in metrics(lab)


def test_e2e_an_unreachable_host_fails_the_run_and_the_others_are_still_checked(lab):
    res = drift(lab, inventory="hosts-bad.json")
    assert res.returncode == 1, res.stdout + res.stderr
    _, report = last_report(lab)
    assert report["summary"]["gone"]["status"] == "unreachable"
    assert "127.0.0.2" in report["runs"][0]["hosts"]["gone"]["unreachable"]
    assert report["summary"]["drift-local"]["status"] == "clean"
    assert 'mlfleet_drift_unreachable{host="gone"} 1\n' in metrics(lab)
    assert "mlfleet_drift_run_success 0\n" in metrics(lab)


def test_e2e_the_planted_secret_reaches_no_file(lab):
    # Both secret-bearing files drift: one task is no_log, the other shows its diff (masked).
    for name in ("secret.conf", "token.conf"):
        (lab["state"] / name).write_text("stale\n")
    # The webhook is unreachable: reported, not fatal, and its credentials stay out of the report.
    hook = "http://user:pw@127.0.0.1:1/hook?token=abc"
    res = drift(lab, "--webhook", hook, "--webhook-timeout", "2")
    assert res.returncode == 2, res.stdout + res.stderr
    folder, report = last_report(lab)
    assert report["webhook"]["ok"] is False and report["webhook"]["target"] == "http://127.0.0.1:1/hook"
    assert "Could not post to the webhook" in res.stderr and "token=abc" not in res.stderr
    changes = {c["task"]: c for c in report["runs"][0]["hosts"]["drift-local"]["changes"]}
    assert changes["Write the secret file"]["diff"] == NO_LOG_NOTE
    assert f"+api_token = {MASK}" in changes["Write the token file"]["diff"]
    scanned = assert_no_secret_in_any_file(lab, "token=abc", "user:pw")
    assert scanned > 20  # reports and ansible-runner's job_events, stdout and command of every run
    assert not list(lab["artifacts"].rglob("env"))  # suppress_env_files: no env/ dumps
    assert list(lab["artifacts"].rglob("command"))
    assert PLANTED not in res.stdout + res.stderr


def test_help_documents_the_exit_codes():
    res = subprocess.run([sys.executable, "-m", "mlfleet.drift", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0
    assert "exit codes:" in res.stdout and "  2  drift" in res.stdout and "  1  the run itself failed" in res.stdout


def test_markdown_sample_is_readable():
    """A recorded drift renders as a table plus a fenced diff (what the README shows)."""
    markdown = to_markdown(report_of(collect([DIFF_EVENT, stats(changed={"loc": 1})])))
    assert markdown.startswith("# Configuration drift report\n")
    assert (
        textwrap.dedent(
            """\
        ```diff
        --- before
        +++ after: /tmp/dx/f.txt
        @@ -0,0 +1 @@
        +hello
        ```"""
        )
        in markdown
    )


# --- Failure paths: every one leaves a failed report, the failed-run metric and no secret -------

SLOW_PLAYBOOK = """\
- name: Slow drift check
  hosts: all
  gather_facts: false
  tasks:
    - name: Take a long time
      ansible.builtin.command: sleep 97
      changed_when: false
      check_mode: false
"""

INVENTORY_TOKEN = "Inv3ntory-Vault-T0ken-51d0"

INVENTORY_PLAYBOOK = """\
- name: Inventory secret
  hosts: all
  gather_facts: false
  tasks:
    - name: Write the inventory token file
      ansible.builtin.copy:
        content: "endpoint = https://ops.example/{{ inventory_token }}\\n"
        dest: "{{ base }}/inventory-token.conf"
        mode: "0600"
"""


def reports(lab):
    return sorted(p for p in lab["artifacts"].iterdir() if p.is_dir()) if lab["artifacts"].exists() else []


def test_e2e_a_bad_option_is_a_failed_run_with_its_report_not_exit_2(lab):
    converge(lab)
    assert drift(lab).returncode == 0  # a successful run first: its time is kept as the last success
    succeeded = last_success_of(metrics(lab))
    res = drift(lab, "--forks", "many")
    assert res.returncode == 1, res.stdout + res.stderr  # argparse's own exit 2 would read as "drift"
    assert "usage error: argument --forks: invalid int value: 'many'" in res.stderr
    _, report = last_report(lab)
    assert report["result"] == "failed" and report["exit_code"] == 1
    assert report["errors"] == ["bad command line: argument --forks: invalid int value: 'many'"]
    assert "mlfleet_drift_run_success 0\n" in metrics(lab)
    assert succeeded is not None and last_success_of(metrics(lab)) == succeeded


def test_e2e_an_unreadable_webhook_file_is_a_failed_run_with_its_report(lab):
    before = len(reports(lab))
    res = drift(lab, "--webhook-url-file", str(lab["base"] / "no-such-url-file"))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert "could not read --webhook-url-file" in res.stderr and "No such file or directory" in res.stderr
    assert len(reports(lab)) == before + 1
    folder, report = last_report(lab)
    assert report["result"] == "failed" and report["runs"] == []
    assert "could not read --webhook-url-file" in report["errors"][0]
    assert "> **Error:** could not read --webhook-url-file" in (folder / "report.md").read_text()
    assert "could not read --webhook-url-file" in (folder / "report.junit.xml").read_text()
    assert "mlfleet_drift_run_success 0\n" in metrics(lab)
    assert_no_secret_in_any_file(lab)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running, not a zombie (orphans reparent to a PID 1 that may never reap them)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_e2e_sigterm_mid_run_leaves_a_failed_scrubbed_report_and_no_process(lab):
    """What systemd does at TimeoutStartSec or a stop: SIGTERM to every process of the unit (the
    tool, ansible-playbook, its workers and their tasks), SIGKILL 90 s later."""
    (lab["base"] / "slow.yml").write_text(SLOW_PLAYBOOK)
    cmd, env = drift_command(lab, playbook="slow.yml")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(cmdline(pid) == "sleep 97" for pid in descendants(proc.pid)):
            assert time.monotonic() < deadline, "the slow task never started"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.5)
        tree = [proc.pid, *descendants(proc.pid)]
        for pid in tree:
            # The tool, signalled first, may already have ended some of them (systemd skips those too).
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        # Nothing of a failed attempt may outlive the test (a leftover run would write into the
        # artifacts that the next tests scan).
        if proc.poll() is None:
            for pid in [*descendants(proc.pid), proc.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1, out + err
    _, report = last_report(lab)
    assert report["result"] == "failed"
    assert any("stopped by SIGTERM" in e for e in report["errors"]), report["errors"]
    assert "stopped by SIGTERM" in err
    assert "mlfleet_drift_run_success 0\n" in metrics(lab)
    assert not [pid for pid in tree if alive(pid)], "a process of the run outlived SIGTERM"
    assert_no_secret_in_any_file(lab)


def start_slow_run(lab) -> subprocess.Popen[str]:
    (lab["base"] / "slow.yml").write_text(SLOW_PLAYBOOK)
    cmd, env = drift_command(lab, playbook="slow.yml")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(cmdline(pid) == "sleep 97" for pid in descendants(proc.pid)):
        assert time.monotonic() < deadline, "the slow task never started"
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
    return proc


def files_with(folder: Path, secret: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_e2e_a_run_killed_with_sigkill_is_cleaned_up_by_the_next_run(lab):
    """What the OOM killer, systemd's final SIGKILL or a power loss leave: a report folder with the
    raw ansible-runner artifacts (the `command` file dumps the environment) and no report. The next
    run removes those artifacts, gives the folder a failed report and says so; a folder whose run
    still holds its lock, and folders the tool did not make, are left alone."""
    before = set(reports(lab))
    proc = start_slow_run(lab)
    try:
        tree = [proc.pid, *descendants(proc.pid)]
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (killed,) = set(reports(lab)) - before
    assert not (killed / "report.json").exists()
    assert files_with(killed, PLANTED), "the fault did not leave the unmasked secret it is about"
    # A run that is still going (it holds its lock), and a folder that is not a run's.
    going = lab["artifacts"] / "20261205T040000Z"
    (going / "raw").mkdir(parents=True)
    (going / "raw" / "command").write_text("still being written\n")
    foreign = lab["artifacts"] / "keep-me"
    foreign.mkdir()
    (foreign / "notes").write_text("not the tool's\n")
    a_while_ago = time.time() - 120  # the age a folder must have before it can be taken for dead
    for folder in (killed, going, foreign):
        os.utime(folder, (a_while_ago, a_while_ago))
    try:
        with (going / ".running").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            res = drift(lab)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"An earlier run ({killed.name}) was killed before it finished" in res.stderr
        (folder,) = set(reports(lab)) - before - {killed, going, foreign}
        report = json.loads((folder / "report.json").read_text())
        assert report["healed_runs"] == [killed.name]
        assert f"`{killed.name}`" in (folder / "report.md").read_text()
        healed = json.loads((killed / "report.json").read_text())
        assert healed["result"] == "failed"
        assert "killed before it finished" in healed["errors"][0]
        assert sorted(p.name for p in killed.iterdir()) == ["report.json", "report.junit.xml", "report.md"]
        assert files_with(killed, PLANTED) == []
        assert (going / "raw" / "command").read_text() == "still being written\n"
        assert not (going / "report.json").exists()
        assert (foreign / "notes").is_file() and not (foreign / "report.json").exists()
    finally:
        for folder in (going, foreign):
            for path in sorted(folder.rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
            folder.rmdir()
    assert_no_secret_in_any_file(lab)


def test_e2e_inventory_vault_values_are_masked_in_every_file(lab):
    base = lab["base"]
    inventory = base / "inv"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(
        "all:\n  hosts:\n    drift-local:\n"
        f"      ansible_connection: local\n      ansible_python_interpreter: {sys.executable}\n"
        f"      base: {lab['state']}\n"
    )
    encrypted = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-vault"), "encrypt_string", "--vault-password-file", "vault-pass"]
        + [INVENTORY_TOKEN, "--name", "inventory_token"],
        cwd=base,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (inventory / "group_vars" / "all.yml").write_text(encrypted)
    (base / "inventory.yml").write_text(INVENTORY_PLAYBOOK)
    (lab["state"] / "inventory-token.conf").write_text("endpoint = stale\n")
    res = drift(lab, inventory="inv", playbook="inventory.yml")
    assert res.returncode == 2, res.stdout + res.stderr
    _, report = last_report(lab)
    (change,) = report["runs"][0]["hosts"]["drift-local"]["changes"]
    assert f"+endpoint = https://ops.example/{MASK}" in change["diff"]
    assert_no_secret_in_any_file(lab, INVENTORY_TOKEN)


def test_e2e_a_held_lock_is_reported_as_such_and_nothing_runs(lab):
    lock = lab["base"] / "drift.lock"
    before = len(reports(lab))
    metrics_before = metrics(lab)
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.write("pid 4242, started 2026-12-05T04:00:00+00:00\n")
        handle.flush()
        res = drift(lab, "--lock-file", str(lock))
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"Not run: another drift run holds {lock} (pid 4242, started 2026-12-05T04:00:00+00:00)" in res.stderr
    assert len(reports(lab)) == before and metrics(lab) == metrics_before
    # Released: the next run takes the lock, runs and names itself in it.
    res = drift(lab, "--lock-file", str(lock))
    assert res.returncode in (0, 2), res.stdout + res.stderr
    assert lock.read_text().startswith("pid ")


def test_last_success_is_kept_across_failed_runs_and_renewed_by_a_good_one():
    now = datetime(2025, 1, 2, 6, tzinfo=UTC)
    failed = report_of()
    failed.errors.append("boom")
    prom = to_prometheus(failed, now, last_success=1700000000)
    assert "mlfleet_drift_run_success 0\n" in prom and last_success_of(prom) == 1700000000
    assert "mlfleet_drift_last_success_timestamp_seconds" not in to_prometheus(failed, now)
    clean = report_of(collect([stats(ok={"loc": 1})]))
    assert last_success_of(to_prometheus(clean, now, last_success=1700000000)) == now.timestamp()


def test_e2e_progress_on_a_terminal_and_the_report_on_stdout(lab):
    """On a terminal the run shows one status line (phase, play, task, hosts); -o json puts exactly the
    report on stdout."""
    import pexpect

    converge(lab)
    cmd, env = drift_command(lab)
    child = pexpect.spawn(cmd[0], cmd[1:], cwd=str(ROOT), env=env, encoding="utf-8", timeout=120, dimensions=(40, 200))
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert "\r\x1b[K[00:0" in child.before and "] check · play 1 Drift test · task " in child.before
    assert "1/1 hosts" in child.before and "result: clean (exit 0)" in child.before

    res = drift(lab, "-o", "json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["result"] == "clean"
    assert "\x1b[K" not in res.stdout + res.stderr  # captured, not a terminal: no status line
    assert "result: clean (exit 0)" in res.stderr
