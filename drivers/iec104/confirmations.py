"""Command confirmations read off the raw APDUs c104 shows (``Connection.on_receive_raw``).

Why by hand: c104's ``Point.transmit`` answers only True or False, so a negative ACT_CON, a
select confirmed but an execute never answered, an execute confirmed without its ACT_TERM, and
silence all look the same. The operator must learn which, so the bytes are read: IEC 60870-5-104
5.1 (APCI: start 0x68, length, four control octets, an I-frame when bit 0 of the first is 0) and
IEC 60870-5-101 7.2 (ASDU: type, variable structure qualifier, cause of transmission with its T
and P/N bits, originator, common address and IOA of two and three octets, little-endian), 7.2.6.4
and 7.2.6.39 (the S/E bit: the high bit of SCO/DCO and of QOS).
"""

from dataclasses import dataclass

# type id -> (name, offset of the qualifier octet holding S/E within the information element)
COMMANDS = {45: ("C_SC_NA_1", 0), 46: ("C_DC_NA_1", 0), 48: ("C_SE_NA_1", 2), 49: ("C_SE_NB_1", 2),
            50: ("C_SE_NC_1", 4), 58: ("C_SC_TA_1", 0), 59: ("C_DC_TA_1", 0), 61: ("C_SE_TA_1", 2),
            62: ("C_SE_TB_1", 2), 63: ("C_SE_TC_1", 4)}
ACT_CON, ACT_TERM = 7, 10
CAUSES = {7: "activation confirmation", 10: "activation termination", 44: "unknown type",
          45: "unknown cause of transmission", 46: "unknown common address", 47: "unknown IOA"}
_ASDU, _ELEMENT = 6, 6 + 9  # where the ASDU starts in the APDU; its first element (after IOA)


@dataclass(frozen=True)
class Confirmation:
    """A station's answer to a command, as it was on the wire."""

    type_name: str
    common_address: int
    ioa: int
    cause: int
    negative: bool
    select: bool

    def describe(self) -> str:
        """``negative activation confirmation of the select``, for messages that name what came."""
        sign = "negative " if self.negative else ""
        return f"{sign}{CAUSES.get(self.cause, f'cause {self.cause}')} of the {'select' if self.select else 'execute'}"


def confirmation(apdu: bytes) -> Confirmation | None:
    """The command confirmation an APDU carries; None for anything else (or too short to be one)."""
    if len(apdu) < _ELEMENT + 1 or apdu[0] != 0x68 or apdu[2] & 0x01:
        return None
    command = COMMANDS.get(apdu[_ASDU])
    if command is None:
        return None
    name, qualifier = command
    if len(apdu) <= _ELEMENT + qualifier:
        return None
    cot = apdu[_ASDU + 2]
    return Confirmation(type_name=name, common_address=apdu[_ASDU + 4] | apdu[_ASDU + 5] << 8,
                        ioa=apdu[_ASDU + 6] | apdu[_ASDU + 7] << 8 | apdu[_ASDU + 8] << 16,
                        cause=cot & 0x3F, negative=bool(cot & 0x40), select=bool(apdu[_ELEMENT + qualifier] & 0x80))
