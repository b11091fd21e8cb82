"""``gridgate dispatch-test`` command round trips against a real gateway outstation and a simulated PCS.

The site is the one of ``test_commands``: group "provincial" may command the PCS setpoint through a
direct, a select-before-operate and a time-tagged IOA; group "regional" maps the same IOAs, but the
policy leaves it out. The simulators, the control API and the gateway run on the test reactor; the
tool, synchronous, runs in a worker thread.
"""

import argparse
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from gateway.commissioning import dispatchtest
from gateway.simulation.simcontrol import control_url, start_control
from tests.integration.sites import until
from tests.integration.test_commands import SETPOINT, SETPOINT_SBO, SETPOINT_TAGGED, _site

pytestmark = pytest.mark.integration
POINT = "pcs1.active_power_setpoint"


def _arguments(run: Any, folder: Path, group: str, port: int, simulator: str, **extra: Any) -> argparse.Namespace:
    return argparse.Namespace(site=str(run.site.file), group=group, target=f"127.0.0.1:{port}", simulator=simulator,
                              junit=str(folder / "junit.xml"), html=str(folder / "report.html"), timeout=5.0,
                              latency_points=20, max_latency=3.0, time_tolerance=2.0, **extra)


@pytest.fixture
def dispatch(tmp_path: Path, running):
    """Factory: run the site, then dispatch-test against one of its groups; fires with the exit code."""
    @pytest_twisted.inlineCallbacks
    def go(group: str = "provincial", **extra: Any) -> Iterator:
        path, provincial, regional = _site(tmp_path)
        run = yield running(path)
        yield until(run.all_good, 15)
        control = start_control(reactor, run.simulators, run.site.devices)
        try:
            args = _arguments(run, tmp_path, group, provincial if group == "provincial" else regional,
                              control_url(control), **extra)
            code = yield deferToThread(dispatchtest.main, run.site, args)
        finally:
            yield control.stopListening()
        return code, run
    return go


def _cases(folder: Path) -> dict[str, ET.Element]:
    root = ET.parse(folder / "junit.xml").getroot()
    return {case.get("name"): case for suite in root.iter("testsuite") if suite.get("name") == "commands"
            for case in suite.iter("testcase")}


def _audit(folder: Path, event: str) -> list[dict]:
    records = [json.loads(line) for line in (folder / "audit.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == event]


@pytest_twisted.inlineCallbacks
def test_direct_and_sbo_setpoints_round_trip(dispatch, tmp_path: Path, capsys: pytest.CaptureFixture) -> Iterator:
    """Direct, SBO and time-tagged setpoints: a safe value confirmed and terminated, served by the PCS, then put back; latencies reported."""
    code, run = yield dispatch()
    out = capsys.readouterr().out
    assert code == 0, out
    cases = _cases(tmp_path)
    assert set(cases) == {f"{POINT} (IOA {ioa})" for ioa in (SETPOINT, SETPOINT_SBO, SETPOINT_TAGGED)}
    for case in cases.values():
        assert case.find("failure") is None and case.find("skipped") is None
        detail = case.find("system-out").text
        assert "value sent: 25 (wire 25)" in detail or "value sent: 25 (wire 0.1)" in detail, detail
        assert "device value: 25" in detail and "restored: restored 0" in detail, detail
        for line in ("ACT_CON: ", "ACT_TERM: "):
            milliseconds = next(row for row in detail.splitlines() if row.startswith(line)).split()[1]
            assert milliseconds.isdigit() and int(milliseconds) < 3000, detail
    assert "select confirmed in" in cases[f"{POINT} (IOA {SETPOINT_SBO})"].find("system-out").text
    assert run.simulators[0].value("pcs1", "active_power_setpoint") == 0  # left as found
    assert [r["value"] for r in _audit(tmp_path, "confirmed")] == [25, 0, 25, 0, 25, 0]
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    table = page.split("<h2>Commands</h2>")[1].split("<h2>")[0]
    assert "<th>ACT_CON ms</th><th>ACT_TERM ms</th><th>device value</th>" in table
    assert f'<td class="num">{SETPOINT_SBO}</td><td>C_SE_NC_1</td><td>select_execute</td><td>{POINT}</td>' in table
    assert "commands: ACT_CON p50" in page
    assert "commands (3 IOAs): ACT_CON p50" in out and "ACT_TERM p50" in out


@pytest_twisted.inlineCallbacks
def test_command_ioa_the_policy_excludes_fails_naming_the_point(dispatch, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> Iterator:
    """Group "regional" is not in the setpoint's policy: each command IOA fails on a negative ACT_CON, naming IOA and point, pointing to the audit log."""
    code, run = yield dispatch("regional")
    out = capsys.readouterr().out
    assert code == 1
    for ioa in (SETPOINT, SETPOINT_SBO, SETPOINT_TAGGED):
        failure = _cases(tmp_path)[f"{POINT} (IOA {ioa})"].find("failure")
        assert failure is not None
        message = failure.get("message")
        assert message.startswith(f"{POINT} at IOA {ioa} (")
        assert "negative ACT_CON" in message and "audit log" in message
        assert f"FAIL {message}" in out
    assert run.simulators[0].value("pcs1", "active_power_setpoint") == 0
    assert not _audit(tmp_path, "written")
    assert len([r for r in _audit(tmp_path, "refused") if "not allowed" in r["reason"]]) == 3


@pytest_twisted.inlineCallbacks
def test_no_commands_sends_nothing(dispatch, tmp_path: Path) -> Iterator:
    """--no-commands: every command IOA is reported "not checked" and the gateway receives no command."""
    code, _ = yield dispatch(no_commands=True)
    assert code == 0
    for case in _cases(tmp_path).values():
        skipped = case.find("skipped")
        assert skipped is not None and "--no-commands" in skipped.get("message")
    assert not _audit(tmp_path, "received")
