"""One simulated Modbus device: its register image, its address map, and the pymodbus action.

Split from ``drivers.modbus.sim.server`` so the register bookkeeping (encoding values, checking
client requests) reads apart from the servers, endpoints and faults around it.

What the device answers is what its profile describes, so the driver's fallbacks meet the
refusals they are written for:

* **Address map.** A device implements the registers (and bits) its points occupy, plus the
  unused ones between two points at most ``modbus.max_gap`` apart: ``max_gap`` is the profile's
  statement that a read may span such a gap, so those registers read 0 (reserved registers
  inside a documented block, such as the PCS's 1007). Every other address answers exception 02
  (ILLEGAL DATA ADDRESS) for any read or write that touches it, as the PCS profile documents
  for the registers between its blocks. With ``max_gap: 0`` every unmapped register refuses.
* **Function codes.** The README's table gives each table its functions: FC1 and FC5 for coils,
  FC2 for discrete inputs, FC3, FC6 and FC16 for holding registers, FC4 for input registers.
  ``single_register_write: 16`` says the device lacks FC6; then FC6 answers exception 01
  (ILLEGAL FUNCTION), as the RTU BMS profile documents. Function codes no profile promises
  (FC15, FC22, FC23) answer 01 too.

Both checks run in ``refusal``, which the request handler (``drivers.modbus.sim.faults``) calls
before the datastore sees a request: pymodbus' own datastore lays bit tables out without gaps
and counts a bit read in registers when it calls the action, so it cannot refuse a bit gap
itself. The register blocks are still declared range by range, so pymodbus agrees.

Values. Each device has a ``gateway.simulation.simvalues.ValueEngine``; the simulator steps it every
``period_s`` and encodes every point with ``drivers.modbus.codec`` into the device's own
register image (one per table, from the lowest to the highest address used). A value the type
cannot carry is logged once per point, naming device and point, and the register keeps its last
value; ``check_value`` refuses such a value up front for callers that can say no (the control
API). A string point serves its ``sim.text``, else its name. A point with ``scale_factor`` is
encoded as value / 10^exponent with the exponent its scale-factor point serves at that moment:
scale-factor points are served first, so one tick never mixes an old exponent with a new value.

Data reaches pymodbus through the documented ``SimDevice(action=...)`` callback. pymodbus awaits
it on every register access, with the function code, the request address, the block's live
register list ("modify inline") and, for writes, the values about to be stored. On every access
the action copies the device's image into that list, so a request always sees the latest tick
without reaching into pymodbus' runtime. On a write (FC 5/6/16) it checks that every written
address belongs to a writable point (else exception 2), decodes each touched point from the
image as it would be after the write, checks its limits (else exception 3), then stores the
words and calls ``engine.set`` so follow/integrate behaviours react to setpoints.
"""

import logging
import zlib

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus import codec
from drivers.modbus.profile import BIT_TABLES, ModbusPoint, ModbusProfile
from drivers.modbus.sim.faults import HEALTHY
from gateway.model import Device, Value
from gateway.simulation.simvalues import ValueEngine

log = logging.getLogger("drivers.modbus.sim.server")  # one logger for the whole simulator

TABLES = ("coil", "discrete", "holding", "input")  # the order of SimDevice's simdata tuple
_FUNCTIONS = {1: "coil", 5: "coil", 2: "discrete", 4: "input", 3: "holding", 6: "holding",
              16: "holding"}


def functions_of(profile: ModbusProfile) -> dict[int, str]:
    """The function codes a device of ``profile`` answers, each with the table it reaches."""
    functions = dict(_FUNCTIONS)
    if profile.modbus.single_register_write != 6:
        del functions[6]
    return functions


def implemented_ranges(spans: list[tuple[int, int]], max_gap: int) -> list[tuple[int, int]]:
    """The [start, stop) address ranges a device serves: point spans joined across gaps of at
    most ``max_gap``. Two ranges are always at least one unserved address apart."""
    ranges: list[tuple[int, int]] = []
    for start, stop in sorted(spans):
        if ranges and start - ranges[-1][1] <= max_gap:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], stop))
        else:
            ranges.append((start, stop))
    return ranges


class _Table:
    """One Modbus table of one device: the words (or bits) it serves, from ``base`` up."""

    def __init__(self, name: str, profile: ModbusProfile, points: list[ModbusPoint]) -> None:
        self.name, self.bits = name, name in BIT_TABLES
        self.points = points
        spans = [(profile.pdu_address(p), profile.pdu_address(p) + p.count) for p in points]
        self.ranges = implemented_ranges(spans, profile.modbus.max_gap)
        self.low = min((s for s, _ in spans), default=0)
        high = max((e for _, e in spans), default=0)
        self.base = self.low - self.low % 16 if self.bits else self.low
        size = high - self.base
        self.data: list[int] = [0] * (-(-size // 16) * 16 if self.bits else size)
        self.writable_at = {a for (s, e), p in zip(spans, points) if p.writable for a in range(s, e)}

    def covers(self, start: int, count: int) -> bool:
        """Whether every address of ``start`` .. ``start + count - 1`` is served."""
        return any(low <= start and start + count <= high for low, high in self.ranges)

    def simdata(self) -> list[SimData]:
        """The pymodbus blocks declaring this table's addresses (an unusable stub if empty).

        Register tables get one block per implemented range, so pymodbus itself refuses the
        gaps too; a bit table is one block from ``low`` up (pymodbus fills bit gaps as valid).
        """
        if not self.points:
            kind = DataType.BITS if self.bits else DataType.INVALID
            return [SimData(address=0, count=16 if self.bits else 1, datatype=kind,
                            values=False if self.bits else 0)]
        if self.bits:
            count = len(self.data) - (self.low - self.base)
            return [SimData(address=self.low, count=count, values=False, datatype=DataType.BITS)]
        return [SimData(address=low, count=high - low, values=0, datatype=DataType.REGISTERS)
                for low, high in self.ranges]

    def registers(self) -> list[int]:
        """The table as pymodbus' block holds it: bit tables packed 16 to a register, bit 0 first."""
        if not self.bits:
            return self.data
        return [sum(1 << i for i, bit in enumerate(self.data[at:at + 16]) if bit)
                for at in range(0, len(self.data), 16)]


def _text(point: ModbusPoint) -> str:
    """What a string point serves: its ``sim.text`` (a nameplate string), else its name."""
    if point.sim is not None and point.sim.text is not None:
        return point.sim.text
    return point.name or point.id


class SimulatedDevice:
    """A device's engine, register image, fault, and the pymodbus action that serves them."""

    def __init__(self, device: Device, seed: int) -> None:
        assert isinstance(device.profile, ModbusProfile)
        self.name, self.profile = device.name, device.profile
        strings = {p.id: _text(p)[:2 * (p.length or 0)] for p in self.profile.points if p.type == "string"}
        self.engine = ValueEngine(self.profile, seed=zlib.crc32(device.name.encode()) ^ seed,
                                  initial=strings)
        self.tables = {t: _Table(t, self.profile, [p for p in self.profile.points if p.table == t])
                       for t in TABLES}
        self.functions = functions_of(self.profile)
        self.fault = HEALTHY
        self._unencodable: set[str] = set()
        # exponents before the points they scale; whole registers before bits, so bits of an
        # alarm word land on top of the word
        self._serve_order = sorted(self.profile.points,
                                   key=lambda p: (p.scale_factor is not None, p.bit is not None))
        self._points = {p.id: p for p in self.profile.points}

    def simdevice(self, unit: int) -> SimDevice:
        """The pymodbus datastore of this device; its action keeps it in step with the image."""
        return SimDevice(id=unit, simdata=tuple(self.tables[t].simdata() for t in TABLES),
                         action=self.on_access)

    def refusal(self, request: ModbusPDU) -> ExcCodes | None:
        """The exception the device answers ``request`` with before any data is touched, or None.

        01 for a function code the profile says the device lacks; 02 when the request touches
        an address the device does not implement. A request with no quantity (count 0) passes,
        so pymodbus answers its quantity check (exception 03), as the standard orders them.
        """
        table = self.functions.get(request.function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if request.function_code in (5, 6):
            start, count = request.address, 1
        elif request.function_code == 16:
            start, count = request.address, len(request.registers)
        else:
            start, count = request.address, request.count
        if count >= 1 and not self.tables[table].covers(start, count):
            return ExcCodes.ILLEGAL_ADDRESS
        return None

    def check_value(self, point: ModbusPoint, value: Value) -> None:
        """``codec.EncodeError`` (a ValueError naming the point) unless the registers can carry
        ``value``: the wrong kind, beyond the type's range, or the 'not implemented' sentinel."""
        if point.bit is not None:
            if isinstance(value, str) or value not in (0, 1):
                raise codec.EncodeError(f"point {point.id!r}: expects a bool, got {value!r}")
            return
        codec.encode(point, self.profile.order_of(point), value,  # type: ignore[arg-type]
                     self._exponent(point, self.tables[point.table].data))

    def serve(self, values: dict[str, Value]) -> None:
        """Encode every point's engine value into the image."""
        for point in self._serve_order:
            self.serve_point(point, values[point.id])

    def serve_point(self, point: ModbusPoint, value: Value) -> None:
        """Encode one value; one it cannot carry is logged once and leaves the register as it was."""
        table = self.tables[point.table]
        at = self.profile.pdu_address(point) - table.base
        try:
            if point.bit is not None:
                words = [codec.set_bit(table.data[at], point.bit, bool(value))]
            else:
                words = codec.encode(point, self.profile.order_of(point), value,  # type: ignore[arg-type]
                                     self._exponent(point, table.data))
        except codec.EncodeError as exc:
            if point.id not in self._unencodable:
                self._unencodable.add(point.id)
                log.warning("simulated %s: point %s cannot serve %r: %s", self.name, point.id,
                            value, exc)
            return
        self._unencodable.discard(point.id)
        table.data[at:at + len(words)] = words

    def served(self, point_id: str) -> Value:
        """The engineering value a client reading the point gets now."""
        point = self.profile.point(point_id)
        assert isinstance(point, ModbusPoint)
        return self._decode(point, self.tables[point.table].data)

    def _decode(self, point: ModbusPoint, data: list[int]) -> Value:
        """The value of ``point`` in ``data``, an image of its table (served, or after a write)."""
        at = self.profile.pdu_address(point) - self.tables[point.table].base
        return codec.decode(point, self.profile.order_of(point), data[at:at + point.count],
                            self._exponent(point, data))[0]

    def _exponent(self, point: ModbusPoint, data: list[int]) -> int | None:
        """The raw value of ``point``'s scale-factor point, read from ``data`` when both share a
        table; None for a point without one, or while it serves its "not implemented" sentinel."""
        if point.scale_factor is None:
            return None
        factor = self._points[point.scale_factor]
        exponent = self._decode(factor, data if factor.table == point.table else self.tables[factor.table].data)
        return exponent if isinstance(exponent, int) else None

    async def on_access(self, function_code: int, _start: int, address: int, _count: int,
                        registers: list[int], values: list[int] | list[bool] | None
                        ) -> ExcCodes | None:
        """pymodbus' SimDevice action: take client writes, then expose the current image."""
        table = self.tables.get(self.functions.get(function_code, ""))
        if table is None or not table.points:
            return ExcCodes.ILLEGAL_ADDRESS
        if values:
            refused = self._client_write(table, address, [int(v) for v in values])
            if refused:
                return refused
        current = table.registers()
        registers[:len(current)] = current
        return None

    def _client_write(self, table: _Table, address: int, words: list[int]) -> ExcCodes | None:
        """Check and apply a client write; the written points' new values go to the engine."""
        span = range(address, address + len(words))
        if any(a not in table.writable_at for a in span):
            return ExcCodes.ILLEGAL_ADDRESS
        after = list(table.data)
        after[address - table.base:address - table.base + len(words)] = words
        accepted: dict[str, Value] = {}
        for point in table.points:
            start = self.profile.pdu_address(point)
            if point.writable is None or start >= span.stop or start + point.count <= span.start:
                continue
            value = self._decode(point, after)
            if not isinstance(value, int | float) or \
                    not point.writable.min <= value <= point.writable.max:
                log.info("simulated %s: refused %s = %r (limits %g..%g)", self.name, point.id,
                         value, point.writable.min, point.writable.max)
                return ExcCodes.ILLEGAL_VALUE
            accepted[point.id] = value
        table.data[:] = after
        for point_id, value in accepted.items():
            self.engine.set(point_id, value)
        return None
