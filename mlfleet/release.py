"""Release manifests: the contract between the data scientists who hand a model over and the fleet.

A manifest (YAML or JSON) names one model release: the model and version, where it came from in the
model registry (run, datasets), the image by digest, the artifacts' sha256s, the code commit, the
health gate's sample, the SLOs canary analysis holds it to, the resources it needs, its owner and
who approved it. ``mlfleet release validate`` checks manifests against the JSON Schema shipped in
this package (``mlfleet release schema`` prints it) and names the field of every fault.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from mlfleet.cli import Parser, parse_or_say

EXIT_OK = 0
EXIT_REFUSED = 1
SCHEMA_FILE = "release-manifest.v1.json"

EPILOG = f"""\
exit codes:
  {EXIT_OK}  every manifest is valid (validate), or the schema was printed (schema)
  {EXIT_REFUSED}  a manifest was refused (each fault names the file and the field), could not be read,
     or the command line was wrong

examples:
  mlfleet release validate releases/iris-v3.yml
  mlfleet release validate -o json releases/*.yml
  mlfleet release schema > release-manifest.schema.json   # for a CI job or an editor
"""


@dataclass(frozen=True)
class Fault:
    """One reason a manifest is refused: the file, the field (a JSON path such as
    ``$.image.digest``) and what is wrong with it."""

    file: str
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.problem}"


def schema() -> dict[str, Any]:
    text = resources.files("mlfleet").joinpath("schemas", SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def json_path(parts: Sequence[str | int]) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _faults_of(error: ValidationError, file: str) -> Iterator[Fault]:
    where = list(error.absolute_path)
    instance = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        for name in error.validator_value:
            if name not in instance:
                yield Fault(file, json_path([*where, name]), "missing (required)")
        return
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = set(error.schema.get("properties", {}))
        for name in sorted(set(instance) - known):
            yield Fault(file, json_path([*where, name]), f"unknown field (known here: {', '.join(sorted(known))})")
        return
    if (
        error.validator == "anyOf"
        and error.schema.get("anyOf")
        and all(set(option) == {"required"} for option in error.schema["anyOf"])
    ):
        names = " or ".join(name for option in error.schema["anyOf"] for name in option["required"])
        yield Fault(file, json_path(where), f"needs {names}")
        return
    if error.validator == "pattern":
        what = error.schema.get("description", f"the pattern {error.validator_value}")
        yield Fault(file, json_path(where), f"{error.instance!r} is not valid here (expected: {what})")
        return
    yield Fault(file, json_path(where), error.message)


def consistency(manifest: dict[str, Any], file: str) -> list[Fault]:
    """Rules across fields that a schema cannot state."""
    faults = []
    reference = (manifest.get("image") or {}).get("reference")
    version = manifest.get("version")
    if isinstance(reference, str) and isinstance(version, str) and ":" in reference.rsplit("/", 1)[-1]:
        tag = reference.rsplit(":", 1)[1]
        if tag != version:
            faults.append(
                Fault(file, "$.image.reference", f"its tag {tag!r} is not the release version {version!r} ($.version)")
            )
    return faults


def validate(manifest: object, file: str) -> list[Fault]:
    """Every fault of one parsed manifest, in document order of their fields."""
    validator = Draft202012Validator(schema())
    faults = [fault for error in validator.iter_errors(manifest) for fault in _faults_of(error, file)]
    if not faults and isinstance(manifest, dict):
        faults = consistency(manifest, file)
    return sorted(set(faults), key=lambda f: (f.field, f.problem))


def load(path: Path) -> object:
    """Parse a manifest file (YAML, of which JSON is a subset)."""
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def check_files(paths: Sequence[Path]) -> dict[str, list[Fault]]:
    results: dict[str, list[Fault]] = {}
    for path in paths:
        name = str(path)
        try:
            manifest = load(path)
        except OSError as exc:
            results[name] = [Fault(name, "$", f"cannot be read: {exc.strerror or exc}")]
        except yaml.YAMLError as exc:
            results[name] = [Fault(name, "$", f"is not YAML: {str(exc).splitlines()[0]}")]
        else:
            results[name] = validate(manifest, name)
    return results


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(results: dict[str, list[Fault]]) -> str:
    out = ["# Release manifests", "", "| manifest | result | faults |", "|---|---|---|"]
    for name, faults in results.items():
        out.append(f"| `{name}` | {'refused' if faults else 'valid'} | {len(faults)} |")
    rows = [fault for faults in results.values() for fault in faults]
    if rows:
        out += ["", "| manifest | field | problem |", "|---|---|---|"]
        out += [f"| `{f.file}` | `{f.field}` | {cell(f.problem)} |" for f in rows]
    return "\n".join(out) + "\n"


def parse_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    parser = Parser(
        prog=prog,
        description="Model release manifests: validate them against the schema, or print the schema.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=Parser)
    check = actions.add_parser("validate", help="check manifests; every fault names its file and field")
    check.add_argument("manifests", nargs="+", type=Path, metavar="MANIFEST", help="YAML or JSON files")
    check.add_argument(
        "-o", "--output", choices=["text", "json", "markdown"], default="text", help="(default: %(default)s)"
    )
    actions.add_parser("schema", help="print the manifest's JSON Schema")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, prog: str = "mlfleet release") -> int:
    args = parse_or_say(parse_args, argv, prog)
    if args is None:
        return EXIT_REFUSED
    if args.action == "schema":
        print(json.dumps(schema(), indent=2, ensure_ascii=False))
        return EXIT_OK
    results = check_files(args.manifests)
    refused = [name for name, faults in results.items() if faults]
    if args.output == "json":
        report = {name: {"valid": not found, "faults": [asdict(f) for f in found]} for name, found in results.items()}
        print(json.dumps(report, indent=2, sort_keys=True))
    elif args.output == "markdown":
        sys.stdout.write(markdown(results))
    else:
        for name, faults in results.items():
            if not faults:
                print(f"{name}: valid")
    for name in refused:
        for fault in results[name]:
            print(f"refused: {fault}", file=sys.stderr)
    if refused:
        print(
            f"{len(refused)} of {len(results)} manifest(s) refused: fix the fields named above "
            f"(the schema: {prog} schema)",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
