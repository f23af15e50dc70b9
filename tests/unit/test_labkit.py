"""The lab's lease: one end-to-end run at a time on a docker engine (tests/e2e/labkit.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from labkit import lab_lease

HOLD = """
import sys, time
from pathlib import Path
from labkit import lab_lease
with lab_lease("unit-lab", wait=0, lock_dir=Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold(tmp_path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "e2e")},
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_is_refused_past_its_wait_with_the_holder_named(tmp_path: Path) -> None:
    holder = hold(tmp_path, 30)
    try:
        start = time.monotonic()
        with pytest.raises(RuntimeError) as err, lab_lease("unit-lab", wait=1, lock_dir=tmp_path):
            pass
        assert 1 <= time.monotonic() - start < 10
        message = str(err.value)
        assert f"pid {holder.pid}," in message
        assert "held by another end-to-end run" in message
        assert "MLFLEET_LAB_WAIT" in message
    finally:
        holder.kill()
        holder.wait()


def test_a_second_run_gets_the_lab_once_the_first_ends(tmp_path: Path) -> None:
    holder = hold(tmp_path, 1)
    with lab_lease("unit-lab", wait=30, lock_dir=tmp_path):
        assert holder.poll() == 0  # it had finished: the lease was its until then
        assert f"pid {holder.pid}," not in (tmp_path / "unit-lab.e2e.lock").read_text()


def test_a_killed_run_leaves_no_lease_behind(tmp_path: Path) -> None:
    holder = hold(tmp_path, 60)
    holder.kill()
    holder.wait()
    with lab_lease("unit-lab", wait=0, lock_dir=tmp_path):
        pass
