"""Frames on a serial byte stream: a profile's frame format, a resynchronising scanner, a builder.
Pure: no I/O, no Twisted.

A serial line (or a TCP serial server) delivers octets, not frames: a read can hold half a frame
or three of them, and noise, a device switched on mid-frame or a second talker on the RS-485 bus
put garbage in between. ``construct`` parses and builds a frame it is handed, but it cannot
search a byte stream for where the next frame begins, so the scanner is written by hand: find the
start octets, bound the length, check the end octets and the checksum, and on any failure drop ONE
octet and search again, because the real frame may begin inside the rejected candidate.
``bytes.find`` does the searching and ``anycrc`` the CRCs, so Python runs a few statements per
frame, not per octet.

Four encodings cover the devices in view (``research/drivers-next.md`` section 3):

``binary``           [start] header with a length field, or a fixed length ... [checksum] [end]
``ascii_hex``        YD/T 1363.3 ("电总"): ``~`` VER ADR CID1 CID2 LENGTH INFO CHKSUM ``\\r``, hex
``ascii_line``       [start] text [separator HH] end, e.g. NMEA ``$...*HH\\r\\n``
``length_prefixed``  [start] N ASCII decimal digits, then that many body octets (FBG interrogators)

What ``Frame.payload`` holds, and what ``build`` takes, per encoding (``build`` is the exact
inverse, so the payload a scanner returns builds the same frame again):

- ``binary``: the frame without start, checksum and end octets; the length field stays at its
  place (offset - len(start)). ``build`` overwrites the length field with the right value, so
  what comes back from the scanner is the payload with the length field filled in.
- ``ascii_hex``: the decoded octets VER ADR CID1 CID2 followed by INFO (``payload[4:]``).
  LENGTH is left out: like the checksum it is framing, which the scanner checks and ``build``
  computes from INFO, so a payload round-trips unchanged.
- ``ascii_line``: the text between start and separator (or end).
- ``length_prefixed``: the body; the digits are framing.

A scanner keeps at most ``max_length`` octets waiting (a candidate longer than that is rejected),
and never returns a frame whose checksum failed. Every octet fed ends up in exactly one of: a
returned frame, ``counters["garbage_octets"]``, or ``pending``.
"""

import binascii
from dataclasses import dataclass
from typing import Protocol

from drivers.serial_framed.checksums import Checksum, checksum, length_field, split_length_field

ENCODINGS = ("binary", "ascii_hex", "ascii_line", "length_prefixed")
COUNTERS = ("frames", "garbage_octets", "bad_checksum", "bad_length", "truncated", "bad_format")
_BYTEORDERS = ("big", "little")
_HEX_DIGITS = b"0123456789ABCDEFabcdef"


class FrameFormatError(ValueError):
    """A frame format that no frame can satisfy or that the encoding cannot express."""


class BuildError(ValueError):
    """A payload that cannot be framed in a format (too long, a length that does not fit, ...)."""


@dataclass(frozen=True, slots=True)
class LengthField:
    """Where a frame says how long it is. Binary: ``size`` octets at ``offset`` from the frame's
    first octet, whole frame length = value + ``adjust``. length_prefixed: ``size`` ASCII digits
    right after the start octets, body length = value + ``adjust``."""

    offset: int  # octets from the frame's first octet (start octets included)
    size: int  # binary: 1, 2 or 4 octets; length_prefixed: ASCII decimal digits
    byteorder: str = "big"  # "big" | "little" (binary only)
    adjust: int = 0  # added to the value: what the field covers, as the profile says


@dataclass(frozen=True, slots=True)
class ChecksumField:
    """A checksum that sits right before the end octets, covering the frame's octets from
    ``start`` up to ``end`` octets before the checksum."""

    algorithm: str  # a name in checksums.ALGORITHMS
    start: int = 0  # first octet covered, from the frame's first octet
    end: int = 0  # octets right before the checksum left uncovered
    byteorder: str = "big"  # of the checksum value on the wire (binary encodings)


@dataclass(frozen=True, slots=True)
class FrameFormat:
    """How a device frames its messages (a profile's ``framing`` section). A format no frame can
    satisfy raises FrameFormatError when a scanner is made or a frame built."""

    encoding: str  # one of ENCODINGS
    start: bytes = b""  # binary: optional, e.g. b"\xAA\x55"; ascii_hex: b"~"; others optional
    end: bytes = b""  # binary: optional trailer; ascii_hex: b"\r"; ascii_line: the terminator, required
    length: LengthField | None = None
    fixed_length: int | None = None  # binary frames of one size, when there is no length field
    checksum: ChecksumField | None = None
    max_length: int = 4096  # longest acceptable frame in octets: a longer length value is garbage
    checksum_separator: bytes = b""  # ascii_line: e.g. b"*" for text*HH (NMEA)


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame cut from the stream: ``raw`` as on the wire, ``payload`` as the module docstring
    defines it per encoding."""

    raw: bytes
    payload: bytes


_Verdict = bytes | str | None
"""A codec's judgement of the candidate at a position: the raw frame, the name of the counter
that says why it is rejected, or None while it is incomplete."""


class _Codec(Protocol):
    resync_at_line_end: bool  # a rejected candidate is dropped through the next end octets

    def examine(self, buf: bytearray, pos: int) -> _Verdict: ...
    def payload(self, raw: bytes) -> bytes: ...
    def build(self, payload: bytes) -> bytes: ...


def _is_hex(text: bytes | bytearray) -> bool:
    """Whether every octet of ``text`` is a hex digit (either case); ``int(x, 16)`` alone would
    also take spaces, signs and underscores."""
    return not text.translate(None, _HEX_DIGITS)


def _refuse_unused(fmt: FrameFormat, *names: str) -> None:
    """A FrameFormatError if any of the fields ``names`` is set: the encoding has no use for it."""
    defaults = FrameFormat(fmt.encoding)
    for name in names:
        if getattr(fmt, name) != getattr(defaults, name):
            raise FrameFormatError(f"{fmt.encoding}: {name} is not used by this encoding")


class _TrailingChecksum:
    """A binary checksum right before the end octets: checked on a raw frame, appended by build."""

    def __init__(self, field: ChecksumField) -> None:
        try:
            self.algorithm: Checksum = checksum(field.algorithm)
        except ValueError as error:
            raise FrameFormatError(str(error)) from None
        if field.byteorder not in _BYTEORDERS or field.start < 0 or field.end < 0:
            raise FrameFormatError(f"checksum: byteorder must be big or little and start, end >= 0: {field}")
        self.field = field
        self.size = self.algorithm.size

    def holds(self, raw: bytes, at: int) -> bool:
        """Whether the checksum at offset ``at`` of ``raw`` matches what it covers."""
        expected = int.from_bytes(raw[at:at + self.size], self.field.byteorder)
        return self.algorithm.compute(raw[self.field.start:at - self.field.end]) == expected

    def append(self, frame: bytes) -> bytes:
        """``frame`` (everything before the checksum) with its checksum after it."""
        value = self.algorithm.compute(frame[self.field.start:len(frame) - self.field.end])
        return frame + value.to_bytes(self.size, self.field.byteorder)


class _BinaryCodec:
    """``binary``: length from a length field or fixed; checksum and end octets trail the frame."""

    resync_at_line_end = False

    def __init__(self, fmt: FrameFormat) -> None:
        _refuse_unused(fmt, "checksum_separator")
        self._start, self._end, self._max = fmt.start, fmt.end, fmt.max_length
        self._checksum = _TrailingChecksum(fmt.checksum) if fmt.checksum else None
        self._tail = len(fmt.end) + (self._checksum.size if self._checksum else 0)
        self._length = fmt.length
        self._fixed = fmt.fixed_length
        self._head_size = self._header_end(fmt)
        self.min_length = max(self._head_size, self._covered_minimum()) + self._tail
        self._check_sizes()

    def _header_end(self, fmt: FrameFormat) -> int:
        """Octets up to the end of the length field (where the payload can end at the earliest)."""
        field = fmt.length
        if (field is None) == (fmt.fixed_length is None):
            raise FrameFormatError("binary: give either a length field or fixed_length, not both or neither")
        if field is None:
            return len(fmt.start)
        if field.size not in (1, 2, 4) or field.byteorder not in _BYTEORDERS:
            raise FrameFormatError(f"binary: a length field is 1, 2 or 4 octets, big or little: {field}")
        if field.offset < len(fmt.start):
            raise FrameFormatError(f"binary: the length field at offset {field.offset} "
                                   "overlaps the start octets")
        return field.offset + field.size

    def _covered_minimum(self) -> int:
        """The shortest frame body the checksum's start and end offsets leave room for."""
        return self._checksum.field.start + self._checksum.field.end if self._checksum else 0

    def _check_sizes(self) -> None:
        if self._fixed is not None and not max(1, self.min_length) <= self._fixed <= self._max:
            raise FrameFormatError(f"fixed_length {self._fixed} is outside {self.min_length}..{self._max}")
        if self.min_length > self._max:
            raise FrameFormatError(f"max_length {self._max} is below the shortest frame, {self.min_length}")

    def _frame_length(self, buf: bytearray, pos: int) -> int | str | None:
        """The candidate's whole length, a rejection reason, or None until the field arrived."""
        if self._length is None:
            return self._fixed
        at = pos + self._length.offset
        if len(buf) < at + self._length.size:
            return None
        length = int.from_bytes(buf[at:at + self._length.size], self._length.byteorder) + self._length.adjust
        return length if self.min_length <= length <= self._max else "bad_length"

    def examine(self, buf: bytearray, pos: int) -> _Verdict:
        length = self._frame_length(buf, pos)
        if not isinstance(length, int):
            return length
        if len(buf) - pos < length:
            return None
        raw = bytes(buf[pos:pos + length])
        if not raw.endswith(self._end):
            return "bad_format"
        if self._checksum and not self._checksum.holds(raw, length - self._tail):
            return "bad_checksum"
        return raw

    def _framing(self) -> int:
        """Octets of a frame that are not payload."""
        return len(self._start) + self._tail

    def payload(self, raw: bytes) -> bytes:
        return raw[len(self._start):len(raw) - self._tail]

    def _head(self, payload: bytes, length: int) -> bytes:
        """Start octets and payload, with the length field filled in for a frame of ``length``."""
        frame = bytearray(self._start + payload)
        if self._length is not None:
            value, field = length - self._length.adjust, self._length
            if not 0 <= value < 1 << 8 * field.size:
                raise BuildError(f"length value {value} does not fit a {field.size}-octet field")
            frame[field.offset:field.offset + field.size] = value.to_bytes(field.size, field.byteorder)
        return bytes(frame)

    def build(self, payload: bytes) -> bytes:
        length = len(payload) + self._framing()
        if self._fixed not in (None, length):
            raise BuildError(f"a {length}-octet frame; this format's frames have {self._fixed} octets")
        if not self.min_length <= length <= self._max:
            raise BuildError(f"a {length}-octet frame is outside this format's "
                             f"{self.min_length}..{self._max} octets")
        frame = self._head(payload, length)
        return (self._checksum.append(frame) if self._checksum else frame) + self._end


class _LengthPrefixedCodec(_BinaryCodec):
    """``length_prefixed``: ``size`` ASCII digits after the start octets count the body octets
    (body length = value + ``adjust``); a checksum, if any, follows the body."""

    def __init__(self, fmt: FrameFormat) -> None:
        if fmt.length is None or fmt.fixed_length is not None:
            raise FrameFormatError("length_prefixed: needs a length field (the digits) and no fixed_length")
        self._digits: LengthField = fmt.length
        super().__init__(fmt)

    def _header_end(self, fmt: FrameFormat) -> int:
        if self._digits.offset != len(fmt.start) or self._digits.size < 1:
            raise FrameFormatError(f"length_prefixed: at least one digit, right after the start octets "
                                   f"(offset {len(fmt.start)}): {self._digits}")
        return self._digits.offset + self._digits.size

    def _frame_length(self, buf: bytearray, pos: int) -> int | str | None:
        head = pos + self._digits.offset
        digits = buf[head:head + self._digits.size]
        if digits and not digits.isdigit():
            return "bad_format"
        if len(digits) < self._digits.size:
            return None
        body = int(digits) + self._digits.adjust
        length = self._digits.offset + self._digits.size + body + self._tail
        return length if body >= 0 and self.min_length <= length <= self._max else "bad_length"

    def _framing(self) -> int:
        return self._head_size + self._tail

    def payload(self, raw: bytes) -> bytes:
        return raw[self._head_size:len(raw) - self._tail]

    def _head(self, payload: bytes, length: int) -> bytes:
        value, size = len(payload) - self._digits.adjust, self._digits.size
        if not 0 <= value < 10 ** size:
            raise BuildError(f"body length value {value} does not fit {size} decimal digits")
        return self._start + b"%0*d" % (size, value) + payload


class _YdtCodec:
    """``ascii_hex``, YD/T 1363.3: ``~`` VER ADR CID1 CID2 LENGTH INFO CHKSUM ``\\r`` in hex. INFO
    carries octets as hex pairs, so an odd LENID is a bad length like a wrong LCHKSUM."""

    resync_at_line_end = False
    _HEADER = 12  # hex characters of VER, ADR, CID1, CID2 (2 each) and LENGTH (4)
    _CHKSUM = 4

    def __init__(self, fmt: FrameFormat) -> None:
        _refuse_unused(fmt, "length", "fixed_length", "checksum_separator")
        if fmt.checksum not in (None, ChecksumField("ydt1363")):
            raise FrameFormatError("ascii_hex: the checksum is YD/T 1363.3 CHKSUM; "
                                   "leave it out or name ydt1363")
        if not fmt.start or not fmt.end:
            raise FrameFormatError("ascii_hex: needs start and end octets (YD/T 1363.3: b'~' and b'\\r')")
        self._start, self._end, self._max = fmt.start, fmt.end, fmt.max_length
        self._chksum = checksum("ydt1363").compute
        shortest = len(fmt.start) + self._HEADER + self._CHKSUM + len(fmt.end)
        if shortest > self._max:
            raise FrameFormatError(f"max_length {self._max} is below the shortest frame, {shortest}")

    def examine(self, buf: bytearray, pos: int) -> _Verdict:
        head = pos + len(self._start)
        header = buf[head:head + self._HEADER]
        if not _is_hex(header):
            return "bad_format"
        if len(header) < self._HEADER:
            return None
        lenid, length_ok = split_length_field(int(header[8:], 16))
        length = head - pos + self._HEADER + lenid + self._CHKSUM + len(self._end)
        if not length_ok or lenid % 2 or length > self._max:
            return "bad_length"
        if len(buf) - pos < length:
            return None
        return self._check(bytes(buf[pos:pos + length]))

    def _check(self, raw: bytes) -> _Verdict:
        """The complete candidate ``raw``, or why its end, hex digits or CHKSUM are wrong."""
        at = len(raw) - len(self._end) - self._CHKSUM
        if not raw.endswith(self._end) or not _is_hex(raw[len(self._start):at + self._CHKSUM]):
            return "bad_format"
        if self._chksum(raw[len(self._start):at]) != int(raw[at:at + self._CHKSUM], 16):
            return "bad_checksum"
        return raw

    def payload(self, raw: bytes) -> bytes:
        text = raw[len(self._start):len(raw) - len(self._end) - self._CHKSUM]
        return binascii.unhexlify(text[:8] + text[self._HEADER:])

    def build(self, payload: bytes) -> bytes:
        info = payload[4:].hex().upper().encode()
        if len(payload) < 4 or len(info) > 0xFFF:
            raise BuildError(f"a YD/T 1363.3 payload is VER ADR CID1 CID2 and at most 2047 INFO octets, "
                             f"not {len(payload)} octets")
        text = payload[:4].hex().upper().encode() + b"%04X" % length_field(len(info)) + info
        frame = self._start + text + b"%04X" % self._chksum(text) + self._end
        if len(frame) > self._max:
            raise BuildError(f"a {len(frame)}-octet frame is longer than max_length {self._max}")
        return frame


class _LineCodec:
    """``ascii_line``: [start] text [separator HH] end, HH the checksum of the text in hex."""

    def __init__(self, fmt: FrameFormat) -> None:
        _refuse_unused(fmt, "length", "fixed_length")
        if not fmt.end:
            raise FrameFormatError("ascii_line: needs end octets (the line terminator)")
        if fmt.checksum_separator and not fmt.checksum:
            raise FrameFormatError("ascii_line: a checksum_separator without a checksum")
        if fmt.checksum and (fmt.checksum.start or fmt.checksum.end):
            raise FrameFormatError("ascii_line: the checksum covers the text; start and end must be 0")
        self._start, self._end, self._max = fmt.start, fmt.end, fmt.max_length
        self._separator = fmt.checksum_separator
        self._checksum = _TrailingChecksum(fmt.checksum) if fmt.checksum else None
        self._hex = 2 * self._checksum.size if self._checksum else 0
        self._tail = (len(self._separator) + self._hex if self._checksum else 0) + len(fmt.end)
        self.min_length = len(fmt.start) + self._tail
        if self.min_length > self._max:
            raise FrameFormatError(f"max_length {self._max} is below the shortest frame, {self.min_length}")
        self.resync_at_line_end = not fmt.start  # without a start marker a line begins only after an end

    def examine(self, buf: bytearray, pos: int) -> _Verdict:
        found = buf.find(self._end, pos + len(self._start), pos + self._max)
        if found < 0:
            return "bad_length" if len(buf) - pos >= self._max else None
        length = found + len(self._end) - pos
        if length < self.min_length:
            return "bad_format"
        raw = bytes(buf[pos:pos + length])
        return raw if self._checksum is None else self._check(raw, self._checksum)

    def _check(self, raw: bytes, trailing: _TrailingChecksum) -> _Verdict:
        """``raw``, or why its separator, hex digits or checksum are wrong."""
        at = len(raw) - self._tail + len(self._separator)
        digits = raw[at:at + self._hex]
        if raw[at - len(self._separator):at] != self._separator or not _is_hex(digits):
            return "bad_format"
        text = raw[len(self._start):at - len(self._separator)]
        return raw if trailing.algorithm.compute(text) == int(digits, 16) else "bad_checksum"

    def payload(self, raw: bytes) -> bytes:
        return raw[len(self._start):len(raw) - self._tail]

    def build(self, payload: bytes) -> bytes:
        frame = self._start + payload
        if self._checksum:
            frame += self._separator + b"%0*X" % (self._hex, self._checksum.algorithm.compute(payload))
        frame += self._end
        if frame.find(self._end, len(self._start)) != len(frame) - len(self._end):
            raise BuildError("the text contains the end octets")
        if len(frame) > self._max:
            raise BuildError(f"a {len(frame)}-octet line is longer than max_length {self._max}")
        return frame


_CODECS: dict[str, type[_BinaryCodec] | type[_YdtCodec] | type[_LineCodec]] = {
    "binary": _BinaryCodec, "ascii_hex": _YdtCodec, "ascii_line": _LineCodec,
    "length_prefixed": _LengthPrefixedCodec}


def _codec(fmt: FrameFormat) -> _Codec:
    """The codec of ``fmt``; a FrameFormatError if no frame could satisfy it."""
    if fmt.encoding not in _CODECS:
        raise FrameFormatError(f"unknown encoding {fmt.encoding!r}; valid: {', '.join(ENCODINGS)}")
    if fmt.max_length < 1:
        raise FrameFormatError(f"max_length must be positive, not {fmt.max_length}")
    return _CODECS[fmt.encoding](fmt)


def build(fmt: FrameFormat, payload: bytes) -> bytes:
    """The frame carrying ``payload`` (as ``Frame.payload`` defines it) in format ``fmt``."""
    return _codec(fmt).build(payload)


class FrameScanner:
    """Cuts the frames of one format out of a byte stream, resynchronising after garbage.

    ``feed`` the octets as they arrive; ``expire`` when the inter-byte or response timeout fires.
    ``counters`` (keys: COUNTERS) says what was found and why octets were dropped: one count per
    rejected candidate, ``truncated`` once per ``expire`` that dropped an incomplete one, and
    ``garbage_octets`` every octet dropped, whatever the reason.
    """

    def __init__(self, fmt: FrameFormat) -> None:
        self._codec = _codec(fmt)
        self._start, self._end = fmt.start, fmt.end
        self._buf = bytearray()
        self._in_bad_line = False  # dropping octets through the next end octets
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    @property
    def pending(self) -> int:
        """Octets waiting in the buffer for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """The frames that ``data`` completed, in stream order."""
        self._buf += data
        return self._scan(final=False)

    def expire(self) -> list[Frame]:
        """The timeout fired: no more octets belong to what is waiting. The incomplete candidate
        is dropped as truncated (counted once), and what followed its first octet is scanned
        again, so a frame hidden behind a false header is still returned."""
        frames = self._scan(final=True)
        self._in_bad_line = False
        return frames

    def _scan(self, final: bool) -> list[Frame]:
        buf, frames, pos, truncated = self._buf, [], 0, False
        while True:
            pos, found = self._seek(pos, final)
            if not found:
                break
            verdict = self._codec.examine(buf, pos)
            if isinstance(verdict, bytes):
                frames.append(Frame(verdict, self._codec.payload(verdict)))
                pos += len(verdict)
            elif verdict is not None:
                self.counters[verdict] += 1
                pos = self._resync(pos)
            elif final:
                truncated = True
                pos = self._resync(pos)
            else:
                break
        del buf[:pos]
        self.counters["frames"] += len(frames)
        self.counters["truncated"] += int(truncated)
        return frames

    def _seek(self, pos: int, final: bool) -> tuple[int, bool]:
        """Where the next candidate begins, after dropping the garbage before it, and whether
        there is one; without one, at most a partial start or end marker is kept for the next feed."""
        buf = self._buf
        if self._in_bad_line:
            found = buf.find(self._end, pos)
            if found < 0:
                return self._drop(pos, len(buf) - (0 if final else len(self._end) - 1)), False
            self._in_bad_line = False
            pos = self._drop(pos, found + len(self._end))
        if not self._start:
            return pos, pos < len(buf)
        found = buf.find(self._start, pos)
        if found >= 0:
            return self._drop(pos, found), True
        return self._drop(pos, len(buf) - (0 if final else len(self._start) - 1)), False

    def _drop(self, pos: int, to: int) -> int:
        """Count the octets from ``pos`` up to ``to`` as garbage; the new position."""
        to = max(pos, to)
        self.counters["garbage_octets"] += to - pos
        return to

    def _resync(self, pos: int) -> int:
        """Past a rejected candidate: one octet on, or through the end of a line without start."""
        if self._codec.resync_at_line_end:
            self._in_bad_line = True
            return pos
        return self._drop(pos, pos + 1)
