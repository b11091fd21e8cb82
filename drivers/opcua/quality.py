"""OPC UA StatusCode -> the gateway's quality flags (IEC 60870-5-104 meanings).

| StatusCode | Quality | value published |
|---|---|---|
| Good | good | the new value |
| GoodLocalOverride, UncertainSubstituteValue | SB | the new value |
| GoodClamped, UncertainEngineeringUnitsExceeded, an overflow info bit | OV | the new value |
| any other Uncertain (LastUsableValue, NoCommunicationLastUsableValue, ...) | NT | the new value |
| a communication error (BadCommunicationError, BadNoCommunication, BadNotConnected, BadServerNotConnected, BadConnectionClosed, BadTimeout, BadSecureChannelClosed, BadSessionClosed) | NT (IV once the device is declared offline) | the last value |
| BadOutOfService | BL IV | the last value |
| any other Bad (BadNodeIdUnknown, BadSensorFailure, BadWaitingForInitialData, ...) | IV | the last value |

A Bad value never replaces the last value: only its quality changes. The table is the
suggestion of research/drivers-next.md section 1, kept as one pure function so the README
quotes it and a test pins every row.
"""

from asyncua import ua
from asyncua.ua import status_codes

from gateway.model import Quality

SUBSTITUTED = frozenset({ua.StatusCodes.GoodLocalOverride, ua.StatusCodes.UncertainSubstituteValue})
OVERFLOWED = frozenset({ua.StatusCodes.GoodClamped, ua.StatusCodes.UncertainEngineeringUnitsExceeded})
COMMUNICATION = frozenset({ua.StatusCodes.BadCommunicationError, ua.StatusCodes.BadNoCommunication,
                           ua.StatusCodes.BadNotConnected, ua.StatusCodes.BadServerNotConnected,
                           ua.StatusCodes.BadConnectionClosed, ua.StatusCodes.BadTimeout,
                           ua.StatusCodes.BadSecureChannelClosed, ua.StatusCodes.BadSessionClosed})
SEVERITY_MASK = 0xC0000000
UNCERTAIN, BAD = 0x40000000, 0x80000000
CODE_MASK = 0xFFFF0000
INFO_DATAVALUE, INFO_TYPE_MASK, OVERFLOW_BIT = 0x400, 0xC00, 0x80


def quality_of(status: int) -> Quality:
    """The quality flags a value with ``status`` is published with (see the module's table)."""
    code = status & CODE_MASK
    severity = status & SEVERITY_MASK
    if severity & BAD:
        if code == ua.StatusCodes.BadOutOfService:
            return Quality.BL | Quality.IV
        return Quality.NT if code in COMMUNICATION else Quality.IV
    if code in SUBSTITUTED:
        return Quality.SB
    if code in OVERFLOWED or (status & INFO_TYPE_MASK == INFO_DATAVALUE and status & OVERFLOW_BIT):
        return Quality.OV
    return Quality.NT if severity == UNCERTAIN else Quality.GOOD


def keeps_last_value(status: int) -> bool:
    """A Bad status carries no usable value: the last one stays, only the quality changes."""
    return bool(status & BAD)


def status_name(status: int) -> str:
    """``BadNodeIdUnknown (0x80340000)``, for logs that name what the server said."""
    known = status_codes.code_to_name_doc.get(status & CODE_MASK)
    return f"{known[0]} (0x{status:08X})" if known else f"0x{status:08X}"
