"""drift_schedule: systemd schedules the check, runs it as configured, treats drift as success and a
held lock or a failed run as failure.

The Python at the configured path is prepare.yml's stub (exit 2 = drift), so these tests observe
the unit wiring; the tool itself is tested in tests/unit/test_drift.py.
"""

import pytest

UNIT = "mlfleet-drift"
PYTHON = "/opt/mlfleet/.venv/bin/python"
REPORTS = "/var/lib/mlfleet-drift/reports"
CALLS = "/var/lib/mlfleet-drift/stub-calls"
LOCK = "/var/lib/mlfleet-drift/lock/drift.lock"
STUB_EXIT = "/var/lib/mlfleet-drift/stub-exit"


def show(host, unit, *props):
    out = host.check_output("systemctl show %s -p %s", unit, ",".join(props))
    return dict(line.split("=", 1) for line in out.splitlines())


def calls(host):
    return host.file(CALLS).content_string.splitlines() if host.file(CALLS).exists else []


def test_the_timer_is_enabled_and_listed(host):
    assert host.check_output("systemctl is-enabled %s.timer", UNIT) == "enabled"
    assert host.check_output("systemctl is-active %s.timer", UNIT) == "active"
    listed = host.check_output("systemctl list-timers --all --no-legend %s.timer", UNIT)
    assert f"{UNIT}.timer" in listed and f"{UNIT}.service" in listed
    props = show(host, f"{UNIT}.timer", "Persistent", "RandomizedDelayUSec", "TimersCalendar")
    assert props["Persistent"] == "yes"
    assert props["RandomizedDelayUSec"] == "20min"
    assert "03:30:00" in props["TimersCalendar"]


def test_systemd_analyze_verify_passes_on_both_units(host):
    res = host.run("systemd-analyze verify /etc/systemd/system/%s.service /etc/systemd/system/%s.timer", UNIT, UNIT)
    assert res.rc == 0 and res.stderr == "", res.stderr


def test_the_service_runs_the_configured_command(host):
    exec_start = show(host, f"{UNIT}.service", "ExecStart")["ExecStart"]
    assert f"argv[]={PYTHON} -m mlfleet.drift" in exec_start
    for arg in (
        "--limit inference",
        f"--artifacts-dir {REPORTS}",
        "--webhook-url-file /etc/mlfleet-drift/webhook-url",
        f"--lock-file {LOCK}",
    ):
        assert arg in exec_start
    # The webhook token stays in the 0600 file, out of the world-readable unit.
    assert "mol-s3cret" not in host.file(f"/etc/systemd/system/{UNIT}.service").content_string
    url = host.file("/etc/mlfleet-drift/webhook-url")
    assert url.mode == 0o600 and url.user == "mlfleet-drift" and "mol-s3cret" in url.content_string


@pytest.fixture()
def old_and_new_reports(host):
    host.check_output(
        f"install -d -o mlfleet-drift {REPORTS}/20200101T040000Z {REPORTS}/fresh"
        f" && touch -d '20 days ago' {REPORTS}/20200101T040000Z"
    )
    yield f"{REPORTS}/20200101T040000Z", f"{REPORTS}/fresh"
    host.run(f"rm -rf {REPORTS}/fresh")


def test_a_drift_run_succeeds_logs_to_the_journal_and_prunes_old_reports(host, old_and_new_reports):
    old, fresh = old_and_new_reports
    before = len(calls(host))
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
    res = host.run("systemctl start %s.service", UNIT)  # oneshot: returns when the run has ended
    assert res.rc == 0, res.stderr
    props = show(host, f"{UNIT}.service", "Result", "ExecMainStatus")
    assert props == {"Result": "success", "ExecMainStatus": "2"}
    new_calls = calls(host)[before:]
    assert len(new_calls) == 1 and new_calls[0].startswith(
        "mlfleet-drift -m mlfleet.drift --playbook playbooks/site.yml"
    )
    assert not host.file(old).exists and host.file(fresh).is_directory  # retention 14 days
    journal = host.check_output("journalctl -u %s.service --since %s --no-pager -o cat", UNIT, since)
    assert "stub drift run: exit 2" in journal


def test_only_the_service_user_can_hold_the_lock(host):
    folder = host.file(LOCK.rsplit("/", 1)[0])
    assert folder.user == "mlfleet-drift" and folder.mode == 0o700
    # Another account (here nobody) cannot create or open the lock, so it cannot stop the checks.
    res = host.run(f"runuser -u nobody -- flock --nonblock {LOCK} true")
    assert res.rc != 0 and "Permission denied" in res.stderr, res.stderr
    assert host.run(f"runuser -u mlfleet-drift -- flock --nonblock {LOCK} true").rc == 0


@pytest.mark.parametrize("code", ["3", "1"])
def test_a_run_that_found_the_lock_held_or_failed_fails_the_unit(host, code):
    """Exit 3 (another run holds the lock) and 1 (the run failed) are not successes."""
    host.check_output(f"echo {code} > {STUB_EXIT}")
    try:
        assert host.run("systemctl start %s.service", UNIT).rc != 0
        assert show(host, f"{UNIT}.service", "Result", "ExecMainStatus") == {
            "Result": "exit-code",
            "ExecMainStatus": code,
        }
    finally:
        host.run(f"rm -f {STUB_EXIT}; systemctl reset-failed {UNIT}.service")
