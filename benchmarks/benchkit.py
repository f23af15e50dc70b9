"""What the benchmark scripts share: the lab helpers of the e2e tests, and one results folder layout
(artifacts/bench/<prefix><UTC stamp>/ with result.json and table.md)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from labkit import Lab, load_inventory, playbook, recap, wait_for  # noqa: E402, F401 - re-exported for the scripts


def results_folder(out: Path, prefix: str = "") -> Path:
    folder = out / datetime.now(UTC).strftime(f"{prefix}%Y%m%dT%H%M%SZ")
    folder.mkdir(parents=True)
    return folder


def write_results(folder: Path, result: object, table: str) -> None:
    """result.json and table.md in the folder; the table and the folder on stdout."""
    (folder / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    (folder / "table.md").write_text(table)
    print(table)
    print(f"results: {folder}")
