"""The deployment ledger, read: what each host serves, and every rollout, rollback and heal.

The rollout role appends one JSON line per host, batch and outcome to the control node's ledger
(``rollout_ledger_file``, default ``artifacts/ledger/deployments.jsonl`` in the site repository).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mlfleet.cli import Parser, parse_or_say
from mlfleet.site import default_project_dir

EXIT_OK = 0
EXIT_FAILED = 1
LEDGER = Path("artifacts/ledger/deployments.jsonl")
# Results after which a host runs the record's version (the others leave it as it was).
SERVING = {"deployed", "rolled_back"}
COLUMNS = ("when", "host", "model", "action", "result", "version", "from_version", "replicas", "who", "commit")

EPILOG = f"""\
exit codes:
  {EXIT_OK}  the records were printed (none may match the filters)
  {EXIT_FAILED}  the ledger could not be read, a line of it is not a JSON record (its number is named),
     or the command line was wrong

--current answers "what does each host serve?": per host and model, the last record after which it
ran that version (deployed, rolled_back).
"""


def parse_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    parser = Parser(
        prog=prog,
        description="Print the deployment ledger, filtered, as a table, JSON lines or Markdown.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--file", type=Path, help=f"the ledger (default: SITE/{LEDGER})")
    parser.add_argument("--project-dir", type=Path, help="the site repository (default: the one around the cwd)")
    parser.add_argument("--model", action="append", default=[], help="only this model (repeatable)")
    parser.add_argument("--host", action="append", default=[], help="only this host (repeatable)")
    parser.add_argument("--result", action="append", default=[], help="only this result, e.g. failed (repeatable)")
    parser.add_argument("--since", help="only records at or after this UTC time (ISO 8601, e.g. 2026-12-01)")
    parser.add_argument("--current", action="store_true", help="per host and model, what it serves now")
    parser.add_argument("--last", type=int, metavar="N", help="only the last N records (after the filters)")
    parser.add_argument(
        "-o", "--output", choices=["table", "json", "markdown"], default="table", help="(default: %(default)s)"
    )
    return parser.parse_args(argv)


def read(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number} is not a JSON record: {exc}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number} is not a JSON object")
            records.append(record)
    return records


def select(records: Iterable[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    chosen = [
        r
        for r in records
        if (not args.model or r.get("model") in args.model)
        and (not args.host or r.get("host") in args.host)
        and (not args.result or r.get("result") in args.result)
        and (not args.since or str(r.get("when", "")) >= args.since)
    ]
    if args.current:
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for record in chosen:
            if record.get("result") in SERVING:
                latest[(str(record.get("host")), str(record.get("model")))] = record
        chosen = [latest[key] for key in sorted(latest)]
    if args.last is not None:
        chosen = chosen[-args.last :] if args.last > 0 else []
    return chosen


def cell(record: dict[str, Any], column: str) -> str:
    value = record.get(column)
    if column == "replicas":
        replicas = value or []
        return ", ".join(
            f"{r.get('container')}@{r.get('device')}" if r.get("device") else str(r.get("container")) for r in replicas
        )
    return "" if value is None else str(value)


def table(records: list[dict[str, Any]]) -> str:
    if not records:
        return "no ledger record matches\n"
    rows = [list(COLUMNS)] + [[cell(r, c) for c in COLUMNS] for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n" for row in rows)


def markdown(records: list[dict[str, Any]], title: str) -> str:
    out = [f"# {title}", ""]
    if not records:
        return "\n".join([*out, "No ledger record matches.", ""])
    out += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for record in records:
        out.append("| " + " | ".join(cell(record, c).replace("|", "\\|") or "—" for c in COLUMNS) + " |")
    failures = [r for r in records if r.get("failure")]
    for record in failures:
        out += ["", f"**{record.get('host')} {record.get('result')} at {record.get('when')}:** {record['failure']}"]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None, prog: str = "mlfleet ledger") -> int:
    args = parse_or_say(parse_args, argv, prog)
    if args is None:
        return EXIT_FAILED
    path = args.file or (args.project_dir or default_project_dir()) / LEDGER
    try:
        records = select(read(path), args)
    except FileNotFoundError:
        print(f"No ledger at {path}: no rollout has run from this site repository (or give --file).", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, ValueError) as exc:
        print(f"Could not read the ledger: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.output == "json":
        sys.stdout.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    elif args.output == "markdown":
        sys.stdout.write(markdown(records, "What each host serves" if args.current else "Deployment ledger"))
    else:
        sys.stdout.write(table(records))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
