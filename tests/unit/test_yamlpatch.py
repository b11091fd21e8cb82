"""Replacing one master group's points: and commands: blocks of a site file as text, every other line kept."""

from pathlib import Path

import pytest

from gateway.commissioning.yamlpatch import replace_group_lists
from gateway.config.source import ConfigErrors

SITE = ("# site comment\n"
        "master_groups:\n"
        "  - name: a   # first\n"
        "    points:   # issued 2026-03\n"
        "      - {point: d.x, ioa: 1, type: M_SP_TB_1}\n"
        "      # old comment\n"
        "      - {point: d.y, ioa: 2, type: M_SP_TB_1}\n"
        "    # after a\n"
        "  - name: b\n"
        "    port: 2405\n"
        "  # after b\n")


def _site(tmp_path: Path, text: str = SITE) -> Path:
    path = tmp_path / "site.yaml"
    path.write_bytes(text.encode("utf-8"))
    return path


def test_replaces_the_block_and_keeps_every_other_line(tmp_path: Path) -> None:
    """The old items (and comments between them) go; the key line's comment and all else stay."""
    path = _site(tmp_path)
    assert replace_group_lists(path, 0, {"points": ["{point: d.z, ioa: 3, type: M_SP_TB_1}"]}) == SITE.replace(
        "      - {point: d.x, ioa: 1, type: M_SP_TB_1}\n"
        "      # old comment\n"
        "      - {point: d.y, ioa: 2, type: M_SP_TB_1}\n",
        "      - {point: d.z, ioa: 3, type: M_SP_TB_1}\n")
    assert path.read_text(encoding="utf-8") == SITE  # returns the text, writes nothing


def test_adds_points_after_the_last_key_keeping_crlf(tmp_path: Path) -> None:
    """A group without points gets the key after its last key, before trailing comments, with CRLF."""
    path = _site(tmp_path, SITE.replace("\n", "\r\n"))
    assert replace_group_lists(path, 1, {"points": ["{point: d.x, ioa: 9, type: M_SP_TB_1}"]}).endswith(
        "    port: 2405\r\n    points:\r\n      - {point: d.x, ioa: 9, type: M_SP_TB_1}\r\n  # after b\r\n")


def test_no_items_give_an_empty_list(tmp_path: Path) -> None:
    """Without items the key becomes ``points: []`` and keeps its comment."""
    text = replace_group_lists(_site(tmp_path), 0, {"points": []})
    assert "    points: []   # issued 2026-03\n    # after a\n" in text


def test_a_group_in_flow_style_is_refused(tmp_path: Path) -> None:
    """A group written as ``- {name: ...}`` cannot be rewritten line by line; the error names its line."""
    path = _site(tmp_path, "master_groups:\n  - {name: a, port: 2404}\n")
    with pytest.raises(ConfigErrors, match=r"site.yaml:2: name: cannot rewrite .* flow style"):
        replace_group_lists(path, 0, {"points": []})


POINT, COMMAND = "{point: d.z, ioa: 3, type: M_SP_TB_1}", "{ioa: 24577, type: C_SC_NA_1, point: d.run}"


def test_points_and_commands_are_added_in_order(tmp_path: Path) -> None:
    """A group with neither key gets points: then commands: after its last key, before trailing comments."""
    text = replace_group_lists(_site(tmp_path), 1, {"points": [POINT], "commands": [COMMAND]})
    assert text.endswith(f"    port: 2405\n    points:\n      - {POINT}\n    commands:\n      - {COMMAND}\n"
                         "  # after b\n")


def test_commands_are_added_after_replaced_points(tmp_path: Path) -> None:
    """Existing points are replaced and a missing commands: key lands after the group's last key."""
    text = replace_group_lists(_site(tmp_path), 0, {"points": [POINT], "commands": [COMMAND]})
    assert ("    points:   # issued 2026-03\n"
            f"      - {POINT}\n"
            f"    commands:\n      - {COMMAND}\n"
            "    # after a\n  - name: b\n") in text


def test_both_existing_blocks_are_replaced_whatever_their_order(tmp_path: Path) -> None:
    """commands: before points: in the file: both blocks are replaced, every other line stays."""
    site = ("master_groups:\n  - name: a\n    commands:   # issued\n      - {ioa: 1, type: C_SC_NA_1, point: d.r}\n"
            "      - {ioa: 2, type: C_SC_NA_1, point: d.s}\n    bind: x\n    points:\n      - {point: d.x, ioa: 9, type: M_SP_NA_1}\n"
            "  # end\n")
    text = replace_group_lists(_site(tmp_path, site), 0, {"points": [], "commands": [COMMAND]})
    assert text == ("master_groups:\n  - name: a\n    commands:   # issued\n"
                    f"      - {COMMAND}\n    bind: x\n    points: []\n  # end\n")
