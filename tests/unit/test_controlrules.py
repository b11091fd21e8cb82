"""The standard's rules for control-direction ASDUs and the select-before-operate state, without sockets."""

from dataclasses import replace

import pytest

from gateway.northbound.iec104.controlrules import Action, ControlFrame, ControlRules

CA, DIRECT, SBO = 5, 100, 200
T0 = 1000.0


def _rules() -> ControlRules:
    return ControlRules(CA, {DIRECT: ("C_SE_NC_1", "direct"), SBO: ("C_SC_NA_1", "select_execute")}, 10.0)


def _frame(ioa: int = SBO, cot: int = 6, select: bool = False, value: object = True, connection: int = 1,
           **changes: object) -> ControlFrame:
    type_name = "C_SE_NC_1" if ioa == DIRECT else "C_SC_NA_1"
    frame = ControlFrame(connection, type_name, cot, False, False, CA, ioa, value, select, 0)
    return replace(frame, **changes)


@pytest.mark.parametrize("cot", [0, 1, 3, 5, 7, 9, 10, 11, 20, 44, 63])
def test_only_activation_and_deactivation_are_causes_a_command_may_carry(cot: int) -> None:
    """Any COT but 6 and 8 is refused with COT 45."""
    verdict = _rules().judge(_frame(DIRECT, cot=cot, value=1.0), T0)
    assert (verdict.action, verdict.reply_cot) == (Action.REFUSE, 45)


def test_flags_address_ioa_and_type_are_checked_before_anything_else() -> None:
    """P/N bit: 45; wrong CA: 46; unknown IOA or another type at the IOA: 47; test bit: negative ACT_CON."""
    rules = _rules()
    assert rules.judge(_frame(negative=True), T0).reply_cot == 45
    assert rules.judge(_frame(common_address=CA + 1), T0).reply_cot == 46
    assert rules.judge(_frame(ioa=999), T0).reply_cot == 47
    assert rules.judge(_frame(type="C_DC_NA_1"), T0).reply_cot == 47
    test = rules.judge(_frame(test=True), T0)
    assert (test.action, test.reply_cot) == (Action.REFUSE, 7)


def test_direct_point_executes_and_refuses_a_select() -> None:
    """A direct IOA executes on COT 6 and refuses S/E = 1."""
    rules = _rules()
    assert rules.judge(_frame(DIRECT, value=1.0), T0).action is Action.EXECUTE
    assert rules.judge(_frame(DIRECT, value=1.0, select=True), T0).action is Action.REFUSE


def test_execute_needs_a_matching_live_select_from_the_same_connection() -> None:
    """Execute without select, after expiry, from another connection, or with another value: refused."""
    rules = _rules()
    assert rules.judge(_frame(), T0).action is Action.REFUSE
    for mismatch, now in (({"connection": 2}, T0), ({"value": False}, T0), ({"qualifier": 1}, T0), ({}, T0 + 11)):
        assert rules.judge(_frame(select=True), T0).action is Action.SELECT
        rules.selected(_frame(select=True), T0)
        assert rules.judge(_frame(**mismatch), now).action is Action.REFUSE, mismatch
        assert rules.judge(_frame(), now).action is Action.REFUSE, "a failed execute ends the selection"


def test_matching_execute_consumes_the_selection() -> None:
    """Select then the same execute: EXECUTE once; a second execute is refused."""
    rules = _rules()
    rules.selected(_frame(select=True), T0)
    assert rules.judge(_frame(), T0 + 1).action is Action.EXECUTE
    assert rules.judge(_frame(), T0 + 2).action is Action.REFUSE


def test_deactivation_cancels_only_its_own_live_select() -> None:
    """COT 8 cancels (confirmed COT 9); with nothing to cancel, or another connection's select, refused with COT 9."""
    rules = _rules()
    refused = rules.judge(_frame(cot=8), T0)
    assert (refused.action, refused.reply_cot) == (Action.REFUSE, 9)
    rules.selected(_frame(select=True), T0)
    assert rules.judge(_frame(cot=8, connection=2), T0).action is Action.REFUSE
    cancelled = rules.judge(_frame(cot=8, select=True), T0)
    assert (cancelled.action, cancelled.reply_cot) == (Action.DESELECT, 9)
    assert rules.judge(_frame(), T0).action is Action.REFUSE


def test_another_connection_cannot_take_over_a_live_select_but_the_same_one_may_renew_it() -> None:
    """A select by connection 2 while 1's is live is refused; 1 may select again (replacing it)."""
    rules = _rules()
    rules.selected(_frame(select=True), T0)
    assert rules.judge(_frame(select=True, connection=2), T0).action is Action.REFUSE
    assert rules.judge(_frame(select=True, value=False), T0).action is Action.SELECT
    rules.selected(_frame(select=True, value=False), T0)
    assert rules.judge(_frame(value=False), T0).action is Action.EXECUTE


def test_a_closed_connection_loses_its_selections() -> None:
    """forget_connection drops the selection: the IOA is free for another connection."""
    rules = _rules()
    rules.selected(_frame(select=True), T0)
    rules.forget_connection(1)
    assert rules.judge(_frame(select=True, connection=2), T0).action is Action.SELECT
