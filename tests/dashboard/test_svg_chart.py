"""svg_chart: a pure function from points to SVG text; one polyline vertex per point, gaps for missing values."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

from hypothesis import given, settings, strategies as st

from fwemu.emulator.dashboard.svg_chart import MAX_MARKERS, Series, line_chart, nice_ticks

SVG = "{http://www.w3.org/2000/svg}"


def vertices(svg: str) -> list[list[tuple[float, float]]]:
    root = ET.fromstring(svg)
    return [[tuple(map(float, p.split(","))) for p in line.get("points").split()]
            for line in root.iter(f"{SVG}polyline")]


def test_one_vertex_per_point_and_the_count_is_stated():
    points = [(i, 10.0 / i) for i in range(1, 51)]
    svg = line_chart([Series("model-0", points)], title="loss")
    (line,) = vertices(svg)
    assert len(line) == 50
    assert ET.fromstring(svg).get("data-points") == "50"
    xs = [x for x, _ in line]
    assert xs == sorted(xs) and len(set(xs)) == 50
    ys = [y for _, y in line]
    assert ys == sorted(ys), "a falling loss is drawn going down (SVG y grows downwards)"


def test_missing_values_break_the_line():
    points = [(1, 1.0), (2, 2.0), (3, None), (4, float("nan")), (5, 3.0), (6, 4.0)]
    lines = vertices(line_chart([Series("m", points)], title="t"))
    assert [len(line) for line in lines] == [2, 2]


def test_empty_and_single_point_charts_are_valid_svg():
    empty = line_chart([], title="loss")
    assert "no steps recorded yet" in empty and vertices(empty) == []
    one = line_chart([Series("m", [(1, 2.5)])], title="loss")
    (line,) = vertices(one)
    assert len(line) == 1 and all(math.isfinite(c) for c in line[0])


def test_series_each_get_a_line_and_a_legend_entry():
    svg = line_chart([Series("model-0", [(1, 1.0), (2, 0.5)]), Series("gen 1 / model-1", [(1, 2.0)])], title="t")
    root = ET.fromstring(svg)
    assert [p.get("data-series") for p in root.iter(f"{SVG}polyline")] == ["model-0", "gen 1 / model-1"]
    assert {p.get("stroke") for p in root.iter(f"{SVG}polyline")} and len(
        {p.get("stroke") for p in root.iter(f"{SVG}polyline")}) == 2
    assert "gen 1 / model-1" in "".join(root.itertext())


def test_labels_are_escaped_and_nothing_external_or_styled():
    svg = line_chart([Series('<script>alert(1)</script>"', [(1, 1.0), (2, 2.0)])], title="a & <b>")
    ET.fromstring(svg)  # well-formed despite the hostile label
    assert "<script>" not in svg
    assert "style=" not in svg and "href" not in svg and "http://" not in svg.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")


def test_markers_only_for_small_charts():
    small = line_chart([Series("m", [(i, i) for i in range(MAX_MARKERS)])], title="t")
    big = line_chart([Series("m", [(i, i) for i in range(MAX_MARKERS + 1)])], title="t")
    assert small.count("<circle") == MAX_MARKERS
    assert big.count("<circle") == 0 and len(vertices(big)[0]) == MAX_MARKERS + 1


def test_nice_ticks_cover_the_range_with_round_steps():
    assert nice_ticks(0, 10) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(4.7, 5.6) == [4.8, 5.0, 5.2, 5.4, 5.6]
    assert nice_ticks(3, 3) == [3]
    assert nice_ticks(1, 4, 6, integer=True) == [1, 2, 3, 4]  # steps are whole: no tick at 1.5


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=32)), max_size=60))
def test_any_values_give_well_formed_svg_inside_the_plot(ys):
    svg = line_chart([Series("m", list(enumerate(ys, 1)))], title="t", width=400, height=200)
    for line in vertices(svg):
        for x, y in line:
            assert 0 <= x <= 400 and 0 <= y <= 200
    finite = sum(1 for y in ys if y is not None and math.isfinite(y))
    assert sum(len(line) for line in vertices(svg)) == finite
    assert not re.search(r"nan|inf", " ".join(p for line in vertices(svg) for p in map(str, line)))
