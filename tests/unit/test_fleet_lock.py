"""The fleet_lock module on real files: taken once, renewed by its run, refused to another live run,
taken over when abandoned or broken by name, given back only by its holder."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from ansible_collections.mlfleet.fleet.plugins.modules import fleet_lock
from module_runner import run_module

COLLECTIONS = Path(__file__).resolve().parents[2] / "collections"


def lock(path: Path, run_id: str, check_mode: bool = False, **args: object) -> dict:
    return run_module(fleet_lock, {"path": str(path), "run_id": run_id, **args}, check_mode=check_mode)


def lock_process(path: Path, run_id: str, **args: object) -> dict:
    """The module in its own Python process, as on a host: warnings come back in the result as there
    (in-process, a controller that has loaded Ansible's display may take them)."""
    args_file = path.parent / f"args-{run_id}.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"path": str(path), "run_id": run_id, **args}}))
    res = subprocess.run(
        [sys.executable, "-m", "ansible_collections.mlfleet.fleet.plugins.modules.fleet_lock", str(args_file)],
        cwd=COLLECTIONS,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(res.stdout)


def warnings(res: dict) -> list[str]:
    """The warnings of a result (ansible-core 2.19 wraps each in a summary of an event)."""
    return [w["event"]["msg"] if isinstance(w, dict) else w for w in res.get("warnings", [])]


def held(path: Path) -> dict:
    return json.loads(path.read_text())


def test_a_free_lock_is_taken_with_owner_and_expiry(tmp_path: Path) -> None:
    path = tmp_path / "state" / "fleet.lock"
    res = lock(path, "ctl-1:10:99", owner="alice@ctl-1: rollout.yml", ttl=600)
    assert res["changed"] is True and not res.get("failed")
    data = held(path)
    assert data["run_id"] == "ctl-1:10:99" and data["owner"] == "alice@ctl-1: rollout.yml"
    assert 590 < data["expires_ts"] - time.time() <= 600
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"


def test_the_same_run_renews_its_lock_without_a_change(tmp_path: Path) -> None:
    path = tmp_path / "fleet.lock"
    lock(path, "run-a", ttl=60)
    first = held(path)
    time.sleep(0.01)
    res = lock(path, "run-a", ttl=600)
    assert res["changed"] is False and not res.get("failed")
    again = held(path)
    assert again["since"] == first["since"]
    assert again["expires_ts"] > first["expires_ts"] + 500


def test_another_live_run_is_refused_and_told_who_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "fleet.lock"
    lock(path, "run-a", owner="alice@ctl-1: rollout.yml")
    before = path.read_text()
    res = lock(path, "run-b", owner="bob@ctl-2: site.yml")
    assert res["failed"] is True
    assert "locked by another run: alice@ctl-1: rollout.yml (run run-a" in res["msg"]
    assert "-e preflight_lock_break=run-a" in res["msg"]
    assert path.read_text() == before


def test_check_mode_reports_the_holder_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "fleet.lock"
    res = lock(path, "run-b", check_mode=True)
    assert res["changed"] is True and not path.exists()
    lock(path, "run-a")
    res = lock(path, "run-b", check_mode=True)
    assert not res.get("failed") and res["holder"]["run_id"] == "run-a"


def test_an_expired_lock_is_taken_over_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "fleet.lock"
    lock(path, "run-a", owner="alice", ttl=1)
    time.sleep(1.1)
    res = lock_process(path, "run-b", owner="bob")
    assert res["changed"] is True and res["taken_over"]["run_id"] == "run-a"
    assert any("Took over the fleet lock of run run-a" in w for w in warnings(res))
    assert held(path)["run_id"] == "run-b"


def test_a_lock_is_broken_only_by_its_own_run_id(tmp_path: Path) -> None:
    path = tmp_path / "fleet.lock"
    lock(path, "run-a")
    assert lock(path, "run-b", break_run_id="run-x")["failed"] is True
    res = lock(path, "run-b", break_run_id="run-a")
    assert res["taken_over"]["run_id"] == "run-a" and held(path)["run_id"] == "run-b"


def test_an_unreadable_lock_counts_as_abandoned(tmp_path: Path) -> None:
    path = tmp_path / "fleet.lock"
    path.write_text("{not json")
    res = lock(path, "run-b")
    assert not res.get("failed") and res["taken_over"]["owner"] == "an unreadable lock file"
    assert held(path)["run_id"] == "run-b"


def test_only_the_holder_gives_the_lock_back(tmp_path: Path) -> None:
    path = tmp_path / "fleet.lock"
    lock(path, "run-a")
    res = lock_process(path, "run-b", state="absent")
    assert res["changed"] is False and path.exists()
    assert any("held by another run" in w for w in warnings(res))
    assert lock(path, "run-a", state="absent", check_mode=True)["changed"] is True and path.exists()
    assert lock(path, "run-a", state="absent")["changed"] is True and not path.exists()
    assert lock(path, "run-a", state="absent")["changed"] is False


def test_bad_options_are_named(tmp_path: Path) -> None:
    assert "needs a run_id: it is empty" in lock(tmp_path / "l", " ")["msg"]
    assert "ttl must be at least 1 second" in lock(tmp_path / "l", "run-a", ttl=0)["msg"]
