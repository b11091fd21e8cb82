"""Fault injection in CI: bench/faults.py with small counts and fixed seeds against real gateway processes.

The bench (``.venv/bin/python bench/faults.py``) sends 100,000 frames and replies per protocol;
here 3,000 each keep the run under a minute. Each campaign runs once per module; the tests read
its figures.
"""

from pathlib import Path
from typing import Any

import pytest

from bench.faults import run_iec104, run_modbus

pytestmark = pytest.mark.integration

FRAMES = REPLIES = 3000
SEED = 20240601


@pytest.fixture(scope="module")
def iec104(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """3,000 random and mutated APDUs at the outstation of a gateway commanding a simulated PCS, then the probes."""
    return run_iec104(FRAMES, SEED, batch=1000, folder=tmp_path_factory.mktemp("iec104"), deadline_s=40)


@pytest.fixture(scope="module")
def modbus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """3,000 replies, most of them spoilt, from 12 Modbus TCP devices the gateway polls every 10 ms."""
    return run_modbus(REPLIES, SEED, tmp_path_factory.mktemp("modbus"), deadline_s=40)


def _log(result: dict[str, Any]) -> str:
    path = Path(result["log"])
    return "\n".join(path.read_text(errors="replace").splitlines()[-40:]) if path.exists() else ""


def test_outstation_neither_crashes_nor_hangs_under_malformed_frames(iec104: dict[str, Any]) -> None:
    """After every 1,000 malformed frames a fresh master gets a full GI answer; the process never ends on its own."""
    tally = iec104["tally"]
    assert tally.frames == FRAMES, iec104["line"]
    assert iec104["crashes"] == 0, f"{iec104['line']}\n{_log(iec104)}"
    assert tally.hangs == 0, f"{iec104['line']}\n{tally.problems}"
    assert tally.closed_by_outstation > 0 and tally.replies, iec104["line"]  # the frames did reach it


def test_outstation_answers_only_with_frames_the_standard_allows(iec104: dict[str, Any]) -> None:
    """Every APDU the outstation sent under fuzzing decodes strictly, in sequence, and none before STARTDT_CON."""
    tally = iec104["tally"]
    assert (tally.undecodable, tally.sequence_errors, tally.i_before_startdt) == (0, 0, 0), \
        f"{iec104['line']}\n" + "\n".join(tally.problems)


def test_nothing_a_master_sends_raises_out_of_the_outstation(iec104: dict[str, Any]) -> None:
    """No malformed ASDU reaches MasterLink's last-resort handler: every one is refused or ignored where it is read."""
    assert iec104["unhandled"] == 0, f"{iec104['line']}\n{_log(iec104)}"


def test_no_command_runs_on_a_connection_without_started_data_transfer(iec104: dict[str, Any]) -> None:
    """A well-formed setpoint before STARTDT, after STOPDT or after an I-frame without ASDU never reaches the device."""
    probes = iec104["probes"]
    assert len(probes) == 3
    assert not [p["line"] for p in probes if p["executed"] or p["audited"]], [p["line"] for p in probes]


def test_no_value_from_a_spoilt_modbus_reply_is_published(modbus: dict[str, Any]) -> None:
    """Every good-quality sample in the spool carries the device's true value; the gateway survives and recovers."""
    assert modbus["replies"] >= REPLIES, modbus["line"]
    assert modbus["crashes"] == 0, f"{modbus['line']}\n{_log(modbus)}"
    assert modbus["hangs"] == 0, f"{modbus['line']}\nnot good again: {modbus['result'].get('not_recovered')}"
    assert modbus["checked"] > 0, modbus["line"]
    assert modbus["bad"] == 0, f"{modbus['line']}\n{modbus['examples']}"
    assert (modbus["unhandled"], modbus["internal"]) == (0, 0), f"{modbus['line']}\n{_log(modbus)}"
