"""Point arrays in profiles: expansion, formatting, strides and nesting, and every error named by
the file and line of the array entry that caused it."""

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from drivers.modbus import DRIVER
from drivers.modbus.profile import ModbusPoint, ModbusProfile
from gateway.config.arrays import MAX_POINTS, expand_profile
from gateway.config.loader import SHIPPED_PROFILES, ProfileLoader
from gateway.config.profile import PointSpec
from gateway.config.source import ConfigProblem

HEADER = "model: T\nkind: sensor\nprotocol: modbus\npoints:\n"


def _load(tmp_path: Path, points: str) -> tuple[ModbusProfile | None, list[ConfigProblem], Path]:
    path = tmp_path / "profile.yaml"
    path.write_text(HEADER + textwrap.indent(textwrap.dedent(points), "  "), encoding="utf-8")
    profile, problems = ProfileLoader({"modbus": DRIVER}).load(path)
    assert profile is None or isinstance(profile, ModbusProfile)
    return profile, problems, path


def _line(path: Path, marker: str) -> int:
    """The 1-based line of the first line of ``path`` containing ``marker``."""
    return next(n for n, text in enumerate(path.read_text().splitlines(), 1) if marker in text)


def _only(problems: list[ConfigProblem]) -> ConfigProblem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def test_the_readme_example_expands_channel_major_with_formatted_strings(tmp_path: Path) -> None:
    """4 x 64 points, ids and names formatted with the index values, address 1000 + 256 (ch-1) + (zone-1)."""
    profile, problems, _ = _load(tmp_path, """\
        - id: "ch{ch}_z{zone:02d}_tmax"
          name: "Channel {ch} zone {zone} maximum temperature"
          table: input
          address: 1000
          type: int16
          scale: 0.1
          offset: -25
          unit: degC
          sim: {kind: sine, value: 30, amplitude: 2}
          array:
            - {name: ch, count: 4, start: 1, stride: 256}
            - {name: zone, count: 64, start: 1, stride: 1}
        """)
    assert problems == [] and profile is not None
    assert len(profile.points) == 256
    assert [p.id for p in profile.points[:2]] + [profile.points[64].id] == ["ch1_z01_tmax", "ch1_z02_tmax", "ch2_z01_tmax"]
    last = profile.point("ch4_z64_tmax")
    assert (last.name, last.address, last.scale, last.offset) == ("Channel 4 zone 64 maximum temperature", 1000 + 3 * 256 + 63, 0.1, -25)
    assert all(p.sim is not None and p.sim.kind == "sine" and p.sim.value == 30 for p in profile.points), "sim copied"


def test_default_strides_are_contiguous_from_the_point_size(tmp_path: Path) -> None:
    """No stride: the inner dimension advances by the type's registers, the outer by the inner's span; start 0."""
    profile, problems, _ = _load(tmp_path, """\
        - id: "f{a}_{b}"
          address: 10
          type: float32
          array: [{name: a, count: 2}, {name: b, count: 3}]
        - id: "s{i}"
          address: 100
          type: string
          length: 5
          array: [{name: i, count: 2}]
        - id: "w{i}"
          address: 200
          array: [{name: i, count: 2, stride: 7}]
        """)
    assert problems == [] and profile is not None
    assert {p.id: p.address for p in profile.points} == {
        "f0_0": 10, "f0_1": 12, "f0_2": 14, "f1_0": 16, "f1_1": 18, "f1_2": 20, "s0": 100, "s1": 105, "w0": 200, "w1": 207}


def test_three_dimensions_nest_last_fastest_and_every_templated_string_is_formatted(tmp_path: Path) -> None:
    """Outer to inner order, strides summed per dimension; any string with a brace is formatted, {{ stays literal."""
    profile, problems, _ = _load(tmp_path, """\
        - id: "r{rack}_m{module}_c{cell}"
          name: "Rack {rack} module {module} cell {cell} {{raw}}"
          unit: "V{rack}"
          table: input
          address: 0
          array:
            - {name: rack, count: 2, start: 1, stride: 1000}
            - {name: module, count: 2, start: 1, stride: 100}
            - {name: cell, count: 3, start: 1}
        """)
    assert problems == [] and profile is not None
    assert [p.id for p in profile.points[:4]] == ["r1_m1_c1", "r1_m1_c2", "r1_m1_c3", "r1_m2_c1"]
    cell = profile.point("r2_m2_c3")
    assert (cell.address, cell.name, cell.unit) == (1000 + 100 + 2, "Rack 2 module 2 cell 3 {raw}", "V2")


def test_plain_points_and_bit_arrays_sit_beside_arrays(tmp_path: Path) -> None:
    """Bits of one alarm word per zone: three bool arrays on the same registers, plus a plain point."""
    profile, problems, _ = _load(tmp_path, """\
        - {id: status, table: input, address: 0}
        - {id: "z{z}_pre", table: input, address: 10, type: bool, bit: 0, array: [{name: z, count: 4}]}
        - {id: "z{z}_alarm", table: input, address: 10, type: bool, bit: 1, array: [{name: z, count: 4}]}
        """)
    assert problems == [] and profile is not None
    assert [(p.id, p.address, p.bit) for p in profile.points[::4]] == [("status", 0, None), ("z3_pre", 13, 0), ("z3_alarm", 13, 1)]


def test_an_error_inside_elements_names_the_entry_line_once(tmp_path: Path) -> None:
    """A bad field of an array entry is reported at its line, by the file's entry and the first element, once."""
    profile, problems, path = _load(tmp_path, """\
        - {id: first, table: input, address: 0}
        - id: "ch{ch}_z{zone:02d}_tmax"
          table: input
          address: 1000
          scale: hot
          array: [{name: ch, count: 2, start: 1, stride: 256}, {name: zone, count: 64, start: 1}]
        """)
    assert profile is None
    problem = _only(problems)
    assert (problem.line, problem.path) == (_line(path, "scale: hot"), "points[1] (ch1_z01_tmax).scale")
    assert problem.message.endswith("(and 127 more element(s) of this array)")
    assert str(problem).startswith(f"{path}:{problem.line}: points[1] (ch1_z01_tmax).scale: Input should be a valid number")


def test_cross_point_checks_name_elements_by_entry(tmp_path: Path) -> None:
    """Overlaps (one line for all elements) and a duplicate id between an array and a plain point."""
    profile, problems, path = _load(tmp_path, """\
        - id: "a{i}"
          table: input
          address: 0
          array: [{name: i, count: 4}]
        - {id: a2, table: input, address: 50}
        - id: "b{i}"
          table: input
          address: 2
          array: [{name: i, count: 4}]
        """)
    assert profile is None
    found = {(p.line, p.path): p.message for p in problems}
    assert found[(_line(path, "id: a2"), "points[1].id")] == "duplicate point id 'a2' (first at points[0] (a2))"
    overlap = found[(_line(path, "address: 2"), "points[2] (b0).address")]
    assert overlap.startswith("'b0' overlaps 'a2' at input register 2") and overlap.endswith("(and 1 more element(s) of this array)")
    assert len(problems) == 2


def test_the_valid_part_is_still_cross_checked_with_file_indices(tmp_path: Path) -> None:
    """A bad plain point does not hide an array's overlap; both are named by their entries in the file."""
    profile, problems, path = _load(tmp_path, """\
        - {id: broken, table: input, address: 0, type: int33}
        - id: "a{i}"
          table: input
          address: 10
          array: [{name: i, count: 3}]
        - {id: plain, table: input, address: 11}
        """)
    assert profile is None
    assert sorted((p.line, p.path) for p in problems) == [
        (_line(path, "int33"), "points[0].type"), (_line(path, "id: plain"), "points[2].address")]
    assert "'plain' overlaps 'a1'" in next(p.message for p in problems if p.path == "points[2].address")


@pytest.mark.parametrize("entry, marker, path, message", [
    ('{id: "z{zon}", address: 0, array: [{name: zone, count: 2}]}', "zon}", "points[0].id",
     "{zon} in 'z{zon}' names no dimension of the array (zone)"),
    ('{id: "z{zone}", name: "Zone {}", address: 0, array: [{name: zone, count: 2}]}', "zone}", "points[0].name",
     "{} in 'Zone {}' names no dimension of the array (zone)"),
    ('{id: "ch{ch}", address: 0, array: [{name: ch, count: 2}, {name: zone, count: 3}]}', "ch{ch}", "points[0].id",
     "id 'ch{ch}' does not use dimension zone: its elements would share ids (write e.g. 'ch{ch}_{zone}')"),
    ('{id: "p{a}{b}", address: 0, array: [{name: a, count: 12, start: 1}, {name: b, count: 12, start: 1}]}',
     "p{a}", "points[0].id", "id template 'p{a}{b}' gives 'p111' twice (a=1, b=11 and a=11, b=1)"),
    ('{id: "z{zone}", address: 0, array: [{name: zone, count: 0}]}', "count: 0", "points[0].array[0].count",
     "Input should be greater than or equal to 1"),
    ('{id: "z{zone}", address: 0, array: [{name: zone, count: 4097}]}', "4097", "points[0].array[0].count",
     "Input should be less than or equal to 4096"),
    ('{id: "z{zone}", address: 0, array: [{name: zone, count: 2, size: 1}]}', "size", "points[0].array[0].size",
     "unknown key"),
    ('{id: "z{zone}", address: 0, array: [{name: zone, count: 2, stride: -1}]}', "stride", "points[0].array[0].stride",
     "Input should be greater than or equal to 0"),
    ('{id: "z{zone}", address: 0, array: [{name: zone, count: 2, stride: 0}]}', "stride", "points[0] (z1).address",
     "'z1' overlaps 'z0' at holding register 0"),
    ('{id: "z{zone}", address: 0, array: [{name: zone, count: 2}, {name: zone, count: 2}]}', "zone}", "points[0].array[1].name",
     "dimension 'zone' is named twice"),
    ('{id: "z{zone}", address: 0, array: []}', "array", "points[0].array",
     "an array needs at least one dimension, e.g. [{name: zone, count: 64}]"),
    ('{id: "z{zone}", address: 0, array: {name: zone, count: 2}}', "array", "points[0].array",
     "Input should be a valid list"),
    ('{id: "z{zone", address: 0, array: [{name: zone, count: 2}]}', "z{zone", "points[0].id",
     "template 'z{zone': expected '}' before end of string"),
    ('{id: "z{zone:s}", address: 0, array: [{name: zone, count: 2}]}', "z{zone", "points[0].id",
     "template 'z{zone:s}' cannot be formatted: Unknown format code 's' for object of type 'int'"),
])
def test_a_bad_array_is_refused_at_its_line(tmp_path: Path, entry: str, marker: str, path: str, message: str) -> None:
    """Each kind of bad array (names, ids, counts, keys, strides, shapes, templates) is named at its key's line."""
    profile, problems, file = _load(tmp_path, f"- {entry}\n")
    assert profile is None
    problem = _only(problems)
    assert (problem.line, problem.path, problem.message) == (_line(file, marker), path, message)


def test_a_dimension_error_names_the_dimension_key_line(tmp_path: Path) -> None:
    """In a block-style array, the line of the offending key of the offending dimension."""
    profile, problems, path = _load(tmp_path, """\
        - id: "c{ch}_z{zone}"
          address: 0
          array:
            - name: ch
              count: 4
            - name: zone
              count: 5000
        """)
    assert profile is None
    problem = _only(problems)
    assert (problem.line, problem.path) == (_line(path, "count: 5000"), "points[0].array[1].count")


def test_a_bad_array_does_not_hide_the_other_points_problems(tmp_path: Path) -> None:
    """The broken entry is left out; a typo in a plain point is still reported in the same run."""
    profile, problems, path = _load(tmp_path, """\
        - {id: "z{zone}", address: 0, array: [{name: zone, count: 0}]}
        - {id: plain, address: 5, scal: 2}
        """)
    assert profile is None
    assert sorted((p.line, p.path) for p in problems) == [
        (_line(path, "count: 0"), "points[0].array[0].count"), (_line(path, "scal"), "points[1].scal")]


def test_more_than_the_limit_of_points_is_refused_before_validation(tmp_path: Path) -> None:
    """16 x 4096 points is the limit; one more point makes the profile an error at its points line."""
    profile, problems, _ = _load(tmp_path, '- {id: "p{a}_{b}", address: 0, array: [{name: a, count: 16}, {name: b, count: 4096}]}\n')
    assert problems == [] and profile is not None and len(profile.points) == MAX_POINTS
    profile, problems, path = _load(tmp_path, '- {id: extra, address: 0, table: input}\n'
                                               '- {id: "p{a}_{b}", address: 0, array: [{name: a, count: 16}, {name: b, count: 4096}]}\n')
    assert profile is None
    problem = _only(problems)
    assert (problem.line, problem.path, problem.message) == (
        _line(path, "points:"), "points", f"the profile expands to {MAX_POINTS + 1} points; at most {MAX_POINTS}")


def test_a_protocol_without_array_field_refuses_arrays() -> None:
    """Points whose driver names no field to advance cannot be arrays: the entry is left out, the problem named."""
    tree = {"points": [{"id": "a{i}", "array": [{"name": "i", "count": 2}]}, {"id": "plain"}]}
    expansion = expand_profile(tree, PointSpec)
    assert expansion.problems == [(("points", 0, "array"), "PointSpec points cannot be arrays: the protocol "
                                                           "names no address field for an array to advance")]
    assert expansion.tree["points"] == [{"id": "plain"}] and expansion.label(0) == "points[1]"


def test_a_profile_without_arrays_is_left_as_it_is() -> None:
    """No array entry: the same tree, paths by the file's indices, nothing folded."""
    tree = {"points": [{"id": "a", "address": 0}]}
    expansion = expand_profile(tree, ModbusPoint)
    assert expansion.tree is tree and expansion.problems == [] and expansion.label(3) == "points[3]"
    problem = ConfigProblem("f", 1, "points[0].id", "m")
    assert expansion.locate([problem, problem]) == [problem, problem]


def test_the_json_schema_takes_array_entries_only_where_the_protocol_has_them() -> None:
    """The modbus profile schema validates the shipped DTS profile (templates and arrays); the OPC UA one has no array."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(json.dumps(ModbusProfile.model_json_schema()))
    jsonschema.validate(yaml.safe_load((SHIPPED_PROFILES / "sensor" / "gridgate-dts-modbus.yaml").read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**yaml.safe_load(HEADER + "  - {id: Bad, address: 0}\n")}, schema)
    from drivers.opcua.profile import OpcUaPoint
    assert "array" not in OpcUaPoint.model_json_schema()["properties"]


def test_strings_under_sim_are_formatted_per_element_for_a_travelling_hot_spot(tmp_path: Path) -> None:
    """``position: "{zone}"`` gives each zone its place on the cable; other sim keys are shared."""
    profile, problems, path = _load(tmp_path, """\
        - id: "z{zone:02d}_tmax"
          table: input
          address: 0
          type: int16
          sim: {kind: hotspot, value: 25, amplitude: 40, position: "{zone}", min: 1, max: 8, period_s: 60}
          array: [{name: zone, count: 8, start: 1}]
        - id: "y{zone}"
          table: input
          address: 100
          sim: {kind: hotspot, value: 25, position: "{zon}", min: 1, max: 8}
          array: [{name: zone, count: 2}]
        """)
    problem = _only(problems)
    assert (problem.line, problem.path) == (_line(path, "{zon}"), "points[1].sim.position")
    assert "{zon} in '{zon}' names no dimension" in problem.message
    good, _, _ = _load(tmp_path, """\
        - id: "z{zone:02d}_tmax"
          table: input
          address: 0
          type: int16
          sim: {kind: hotspot, value: 25, amplitude: 40, position: "{zone}", min: 1, max: 8, period_s: 60}
          array: [{name: zone, count: 8, start: 1}]
        """)
    assert good is not None
    assert [p.sim.position for p in good.points] == [float(n) for n in range(1, 9)]
    assert {(p.sim.kind, p.sim.amplitude, p.sim.max) for p in good.points} == {("hotspot", 40.0, 8.0)}
