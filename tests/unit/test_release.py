"""`mlfleet release`: a manifest is valid, or refused with the field of every fault named."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from mlfleet import cli, release

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "release-iris-v3.yml"


@pytest.fixture
def manifest() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def faults(doc: object) -> list[tuple[str, str]]:
    return [(f.field, f.problem) for f in release.validate(doc, "m.yml")]


def fields(doc: object) -> list[str]:
    return [field for field, _ in faults(doc)]


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(release.schema())


def test_the_documented_example_is_valid(manifest: dict[str, Any]) -> None:
    assert faults(manifest) == []


@pytest.mark.parametrize(
    ("path", "value", "field", "says"),
    [
        # Digests and identifiers: the exact syntax, not just "a string".
        (("image", "digest"), "sha256:" + "a" * 63, "$.image.digest", "sha256:[0-9a-f]{64}"),
        (("image", "digest"), "sha256:" + "A" * 64, "$.image.digest", "is not valid here"),
        (("artifacts", 0, "sha256"), "z" * 64, "$.artifacts[0].sha256", "[0-9a-f]{64}"),
        (("source", "run_id"), "5f0c1c6b", "$.source.run_id", "32 hex"),
        (("source", "datasets", 0, "digest"), "not-a-digest", "$.source.datasets[0].digest", "digest"),
        (("code", "commit"), "9b518de", "$.code.commit", "[0-9a-f]{40}"),
        (("source", "model_version"), "0", "$.source.model_version", "MLflow numbers them from 1"),
        # A version that would be a path or a second argument.
        (("version",), "v2 bad/../:tag", "$.version", "is not valid here"),
        (("image", "reference"), "iris:v3", "$.image.reference", "registry/repository:tag"),
        # Ranges.
        (("slo", "latency_p99_seconds"), 0, "$.slo.latency_p99_seconds", "less than or equal to the minimum"),
        (("slo", "error_ratio"), 1.5, "$.slo.error_ratio", "greater than the maximum"),
        (("resources", "replicas"), 0, "$.resources.replicas", "less than the minimum"),
        (("resources", "memory"), "lots", "$.resources.memory", "Docker's memory syntax"),
        # Types and formats.
        (("approval", "approved_at"), "yesterday", "$.approval.approved_at", "is not valid here"),
        (("owner",), "the iris team", "$.owner", "is not valid here"),
        (("gate", "expected_output"), [], "$.gate.expected_output", "should be non-empty"),
        (("apiVersion",), "mlfleet/v0", "$.apiVersion", "'mlfleet/v1' was expected"),
    ],
)
def test_a_bad_value_is_refused_naming_its_field(
    manifest: dict[str, Any], path: tuple[str | int, ...], value: object, field: str, says: str
) -> None:
    doc = copy.deepcopy(manifest)
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    found = faults(doc)
    assert [f for f, _ in found] == [field], found
    assert says in found[0][1], found


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (("source", "run_id"), "$.source.run_id"),
        (("image", "digest"), "$.image.digest"),
        (("slo",), "$.slo"),
        (("approval", "approved_by"), "$.approval.approved_by"),
        (("source", "datasets", 0, "digest"), "$.source.datasets[0].digest"),
    ],
)
def test_a_missing_field_is_named(manifest: dict[str, Any], path: tuple[str | int, ...], field: str) -> None:
    doc = copy.deepcopy(manifest)
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    assert faults(doc) == [(field, "missing (required)")]


def test_a_misspelt_field_is_refused_not_ignored(manifest: dict[str, Any]) -> None:
    doc = copy.deepcopy(manifest)
    doc["slo"]["latency_p99"] = doc["slo"].pop("latency_p99_seconds")
    found = dict(faults(doc))
    assert set(found) == {"$.slo.latency_p99", "$.slo.latency_p99_seconds"}
    assert found["$.slo.latency_p99"].startswith("unknown field (known here: error_ratio, latency_p99_seconds)")


def test_an_artifact_needs_a_path_or_a_url(manifest: dict[str, Any]) -> None:
    doc = copy.deepcopy(manifest)
    del doc["artifacts"][0]["path"]
    assert faults(doc) == [("$.artifacts[0]", "needs path or url")]
    doc["artifacts"][0]["url"] = "https://models.example.com/iris/3/model.joblib"
    assert faults(doc) == []


def test_the_image_tag_must_be_the_release_version(manifest: dict[str, Any]) -> None:
    doc = copy.deepcopy(manifest)
    doc["image"]["reference"] = "172.28.10.30:5000/iris:v2"
    assert faults(doc) == [("$.image.reference", "its tag 'v2' is not the release version 'v3' ($.version)")]


def test_every_fault_is_reported_at_once(manifest: dict[str, Any]) -> None:
    doc = copy.deepcopy(manifest)
    doc["image"]["digest"] = "latest"
    del doc["code"]
    doc["resources"]["replicas"] = "two"
    assert fields(doc) == ["$.code", "$.image.digest", "$.resources.replicas"]


def test_not_a_mapping_is_refused() -> None:
    assert faults(["a", "list"]) == [("$", "['a', 'list'] is not of type 'object'")]


# --- The command -------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, doc: object) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def test_validate_exits_0_on_valid_manifests(capsys, tmp_path: Path, manifest: dict[str, Any]) -> None:
    json_copy = tmp_path / "iris.json"
    json_copy.write_text(json.dumps(manifest))
    assert cli.main(["release", "validate", str(EXAMPLE), str(json_copy)]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == [f"{EXAMPLE}: valid", f"{json_copy}: valid"]
    assert out.err == ""


def test_validate_exits_1_naming_file_and_field(capsys, tmp_path: Path, manifest: dict[str, Any]) -> None:
    bad = copy.deepcopy(manifest)
    bad["image"]["digest"] = "sha256:short"
    path = write(tmp_path, "bad.yml", bad)
    assert cli.main(["release", "validate", str(EXAMPLE), str(path)]) == 1
    out = capsys.readouterr()
    assert out.out == f"{EXAMPLE}: valid\n"
    assert f"refused: {path}: $.image.digest: 'sha256:short' is not valid here" in out.err
    assert "1 of 2 manifest(s) refused" in out.err


def test_validate_reports_json_and_markdown(capsys, tmp_path: Path, manifest: dict[str, Any]) -> None:
    bad = copy.deepcopy(manifest)
    del bad["owner"]
    path = write(tmp_path, "bad.yml", bad)
    assert cli.main(["release", "validate", "-o", "json", str(path), str(EXAMPLE)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report[str(EXAMPLE)] == {"valid": True, "faults": []}
    assert report[str(path)] == {
        "valid": False,
        "faults": [{"file": str(path), "field": "$.owner", "problem": "missing (required)"}],
    }
    assert cli.main(["release", "validate", "-o", "markdown", str(path)]) == 1
    md = capsys.readouterr().out
    assert f"| `{path}` | refused | 1 |" in md
    assert f"| `{path}` | `$.owner` | missing (required) |" in md


def test_an_unreadable_or_broken_file_is_refused_with_the_reason(capsys, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("model: [iris\n")
    missing = tmp_path / "missing.yml"
    assert cli.main(["release", "validate", str(broken), str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"refused: {broken}: $: is not YAML:" in err
    assert f"refused: {missing}: $: cannot be read: No such file or directory" in err


def test_schema_prints_the_shipped_schema(capsys) -> None:
    assert cli.main(["release", "schema"]) == 0
    assert json.loads(capsys.readouterr().out) == release.schema()


def test_a_bad_command_line_exits_1(capsys) -> None:
    assert cli.main(["release"]) == 1
    assert "usage error" in capsys.readouterr().err
    assert cli.main(["release", "validate"]) == 1
    assert "usage error" in capsys.readouterr().err
