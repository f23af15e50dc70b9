"""ledger_append on real files: one JSON line per record, appended and never rewritten, every record of
concurrent writers kept, a torn last line closed, and a clear failure that keeps the record."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
from pathlib import Path

from ansible_collections.mlfleet.fleet.plugins.modules import ledger_append
from module_runner import run_module


def append(path: Path, record: dict, check_mode: bool = False, **args: object) -> dict:
    return run_module(ledger_append, {"path": str(path), "record": record, **args}, check_mode=check_mode)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_are_appended_as_sorted_json_lines_and_a_repeat_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "deployments.jsonl"
    first = append(path, {"host": "cpu-1", "result": "deployed", "version": "v1"})
    assert first["changed"] is True and first["offset"] == 0
    assert first["line"] == '{"host": "cpu-1", "result": "deployed", "version": "v1"}'
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    before, inode = path.read_bytes(), path.stat().st_ino
    # The same record again is a second event, not a duplicate to drop (lineinfile would drop it).
    second = append(path, {"version": "v1", "result": "deployed", "host": "cpu-1"})
    assert second["offset"] == len(before)
    assert path.read_bytes().startswith(before) and path.stat().st_ino == inode  # never rewritten
    assert lines(path) == [{"host": "cpu-1", "result": "deployed", "version": "v1"}] * 2


def test_check_mode_writes_nothing_and_shows_the_line(tmp_path: Path) -> None:
    path = tmp_path / "deployments.jsonl"
    res = append(path, {"host": "gpu-1", "result": "failed"}, check_mode=True)
    assert res["changed"] is True and res["line"] == '{"host": "gpu-1", "result": "failed"}'
    assert res["diff"]["after"] == res["line"] + "\n" and res["diff"]["before"] == ""
    assert not path.exists()


def test_a_torn_last_line_is_closed_before_the_new_record(tmp_path: Path) -> None:
    path = tmp_path / "deployments.jsonl"
    path.write_text('{"host": "cpu-1", "result": "deployed"}\n{"host": "cpu-2", "res')
    append(path, {"host": "cpu-2", "result": "failed"})
    text = path.read_text().splitlines()
    assert text[1] == '{"host": "cpu-2", "res' and json.loads(text[2]) == {"host": "cpu-2", "result": "failed"}


def _writer(path: str, worker: int, count: int) -> None:
    payload = "x" * 5000  # more than PIPE_BUF: atomicity must come from the lock, not from luck
    for n in range(count):
        line = json.dumps({"id": f"{worker}-{n}", "payload": payload}, sort_keys=True) + "\n"
        ledger_append.append(path, line.encode(), 0o644, 30)


def test_concurrent_writers_lose_and_interleave_nothing(tmp_path: Path) -> None:
    path = tmp_path / "deployments.jsonl"
    workers, count = 8, 150
    procs = [
        multiprocessing.get_context("fork").Process(target=_writer, args=(str(path), w, count)) for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    records = lines(path)  # every line parses: nothing interleaved
    assert len(records) == workers * count
    assert {r["id"] for r in records} == {f"{w}-{n}" for w in range(workers) for n in range(count)}
    for worker in range(workers):  # each writer's records keep their order
        mine = [int(r["id"].split("-")[1]) for r in records if r["id"].startswith(f"{worker}-")]
        assert mine == sorted(mine)


def test_a_lock_held_too_long_fails_and_keeps_the_record_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "deployments.jsonl"
    path.write_text('{"host": "cpu-1"}\n')
    with path.open("a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        res = append(path, {"host": "cpu-2", "result": "rolled_back"}, lock_timeout=1)
    assert res["failed"] is True
    assert f"another writer has held the lock on {path} for 1s: no record written" in res["msg"]
    assert res["line"] == '{"host": "cpu-2", "result": "rolled_back"}'
    assert path.read_text() == '{"host": "cpu-1"}\n'


def test_an_unwritable_ledger_or_a_missing_folder_fails_clearly(tmp_path: Path) -> None:
    res = append(tmp_path / "nowhere" / "deployments.jsonl", {"host": "cpu-1"})
    assert res["failed"] is True and "The ledger's folder" in res["msg"] and "does not exist" in res["msg"]
    folder = tmp_path / "is-a-folder.jsonl"
    folder.mkdir()
    res = append(folder, {"host": "cpu-1", "result": "deployed"})
    assert res["failed"] is True and f"Could not append to the ledger {folder}" in res["msg"]
    assert "No record written" in res["msg"] and res["line"] == '{"host": "cpu-1", "result": "deployed"}'
