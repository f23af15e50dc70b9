"""benchmarks/plot.py: the benchmark tables drawn as plots, and docs/benchmarks.md's plots in step
with its tables."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import plot  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
FLEET = """Some text.

| Workload (N=6) | Settings | Runs | Wall median (min–max) | vs stock | Control CPU | Host CPU | Peak control RSS |
|---|---|---|---|---|---|---|---|
| converge | stock | 3 | 165.4 s (159.24–176.32) | 1.0× | 83.1 s | 190.1 s | 71.1 MiB |
| converge | mitogen | 3 | 63.8 s (59.35–64.22) | 2.59× | 50.8 s | 31.0 s | 106.2 MiB |
| drift | stock | 0 | failed | | | | |

| Other | table |
|---|---|
| not | drawn |
"""


def test_tables_are_read_with_their_header_and_rows() -> None:
    found = plot.tables(FLEET)
    assert [t.header[0] for t in found] == ["Workload (N=6)", "Other"]
    assert found[0].column("Wall") == ["165.4 s (159.24–176.32)", "63.8 s (59.35–64.22)", "failed"]
    assert [plot.kind(t) for t in found] == ["fleet-n6", None]


def test_the_wall_bars_and_their_ranges_are_the_table_s_numbers() -> None:
    fig = plot.plot_fleet(plot.tables(FLEET)[0], "6")
    wall, cpu = fig.axes
    # The failed setting has no bar.
    assert [t.get_text() for t in wall.get_xticklabels()] == ["converge\nstock", "converge\nmitogen"]
    assert [bar.get_height() for bar in wall.patches] == [165.4, 63.8]
    # The error bars reach from each run's min to its max.
    (segments,) = [c for c in wall.collections if len(c.get_segments()) == 2]
    assert [(s[0][1], s[1][1]) for s in segments.get_segments()] == [
        pytest.approx((159.24, 176.32)),
        pytest.approx((59.35, 64.22)),
    ]
    # CPU: the control node's bar, and the hosts' stacked on it.
    assert [(b.get_y(), b.get_height()) for b in cpu.patches] == [
        (0, 83.1),
        (0, 50.8),
        pytest.approx((83.1, 190.1)),
        pytest.approx((50.8, 31.0)),
    ]


def test_a_cell_without_a_number_is_named() -> None:
    with pytest.raises(ValueError, match="no number in table cell 'n/a'"):
        plot.number("n/a")
    assert plot.number("−2.4 %") == -2.4


def test_the_docs_plots_are_drawn_from_the_docs_tables(tmp_path: Path) -> None:
    """Every SVG under docs/img/bench is what plot.py draws from docs/benchmarks.md today: a table
    changed without its plot (or a plot edited by hand) fails here. Regenerate with
    `python benchmarks/plot.py docs/benchmarks.md --out docs/img/bench`."""
    assert plot.main([str(DOCS), "--out", str(tmp_path)]) == 0
    drawn = {p.name: p.read_text() for p in tmp_path.glob("*.svg")}
    kept = {p.name: p.read_text() for p in (ROOT / "docs" / "img" / "bench").glob("*.svg")}
    assert set(drawn) == {"fleet-n6.svg", "fleet-n20.svg", "fleet-n50.svg", "rollout.svg", "endpoint.svg"}
    assert drawn == kept
    # The docs show each of them.
    text = DOCS.read_text()
    assert all(f"](img/bench/{name})" in text for name in drawn)


def test_no_table_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.md"
    empty.write_text("no tables here\n")
    assert plot.main([str(empty), "--out", str(tmp_path / "out")]) == 1
    assert "no benchmark table found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
