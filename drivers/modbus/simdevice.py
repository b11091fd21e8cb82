"""One simulated Modbus device: its register image, and the pymodbus action that serves it.

Split from ``drivers.modbus.simulator`` so the register bookkeeping (encoding values, checking
client writes) reads apart from the servers, endpoints and faults around it.

Values. Each device has a ``gateway.simvalues.ValueEngine``; the simulator steps it every
``period_s`` and encodes every point with ``drivers.modbus.codec`` into the device's own
register image (one per table, coil/discrete/holding/input, each spanning the profile's lowest
to highest address so gap registers read as 0). A value the type cannot carry is logged once per
point, naming device and point, and the register keeps its last value.

Data reaches pymodbus through the documented ``SimDevice(action=...)`` callback. pymodbus awaits
it on every register access, with the function code, the request address, the block's live
register list ("modify inline") and, for writes, the values about to be stored. On every access
the action copies the device's image into that list, so a request always sees the latest tick
without reaching into pymodbus' runtime. On a write (FC 5/6/15/16, also 22/23) it checks that
every written address belongs to a writable point (else exception 2), decodes each touched point
from the image as it would be after the write, checks its limits (else exception 3), then stores
the words and calls ``engine.set`` so follow/integrate behaviours react to setpoints.
"""

import logging
import zlib

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus import codec
from drivers.modbus.profile import BIT_TABLES, ModbusPoint, ModbusProfile
from drivers.modbus.simfaults import _HEALTHY
from gateway.interfaces import Device
from gateway.model import Value
from gateway.simvalues import ValueEngine

log = logging.getLogger("drivers.modbus.simulator")  # the simulator's logger, as before the split

TABLES = ("coil", "discrete", "holding", "input")  # the order of SimDevice's simdata tuple
_TABLE_OF_FUNCTION = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 4: "input",
                      3: "holding", 6: "holding", 16: "holding", 22: "holding", 23: "holding"}


class _Table:
    """One Modbus table of one device: the words (or bits) it serves, from ``base`` up."""

    def __init__(self, name: str, profile: ModbusProfile, points: list[ModbusPoint]) -> None:
        self.name, self.bits = name, name in BIT_TABLES
        self.points = points
        spans = [(profile.pdu_address(p), profile.pdu_address(p) + p.count) for p in points]
        self.low = min((s for s, _ in spans), default=0)
        high = max((e for _, e in spans), default=0)
        self.base = self.low - self.low % 16 if self.bits else self.low
        size = high - self.base
        self.data: list[int] = [0] * (-(-size // 16) * 16 if self.bits else size)
        self.writable_at = {a for (s, e), p in zip(spans, points) if p.writable for a in range(s, e)}

    def simdata(self) -> list[SimData]:
        """The pymodbus block declaring this table's addresses (an unusable stub if empty)."""
        if not self.points:
            kind = DataType.BITS if self.bits else DataType.INVALID
            return [SimData(address=0, count=16 if self.bits else 1, datatype=kind,
                            values=False if self.bits else 0)]
        count = len(self.data) - (self.low - self.base)
        if self.bits:
            return [SimData(address=self.low, count=count, values=False, datatype=DataType.BITS)]
        return [SimData(address=self.low, count=count, values=0, datatype=DataType.REGISTERS)]

    def registers(self) -> list[int]:
        """The table as pymodbus' block holds it: bit tables packed 16 to a register, bit 0 first."""
        if not self.bits:
            return self.data
        return [sum(1 << i for i, bit in enumerate(self.data[at:at + 16]) if bit)
                for at in range(0, len(self.data), 16)]


class _SimulatedDevice:
    """A device's engine, register image, fault, and the pymodbus action that serves them."""

    def __init__(self, device: Device, seed: int) -> None:
        assert isinstance(device.profile, ModbusProfile)
        self.name, self.profile = device.name, device.profile
        strings = {p.id: (p.name or p.id)[:2 * (p.length or 0)]
                   for p in self.profile.points if p.type == "string"}
        self.engine = ValueEngine(self.profile, seed=zlib.crc32(device.name.encode()) ^ seed,
                                  initial=strings)
        self.tables = {t: _Table(t, self.profile, [p for p in self.profile.points if p.table == t])
                       for t in TABLES}
        self.fault = _HEALTHY
        self._unencodable: set[str] = set()
        # whole registers first, so bits of an alarm word land on top of the word
        self._serve_order = sorted(self.profile.points, key=lambda p: p.bit is not None)

    def simdevice(self, unit: int) -> SimDevice:
        """The pymodbus datastore of this device; its action keeps it in step with the image."""
        return SimDevice(id=unit, simdata=tuple(self.tables[t].simdata() for t in TABLES),
                         action=self.on_access)

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
                words = codec.encode(point, self.profile.order_of(point), value)  # type: ignore[arg-type]
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
        at = self.profile.pdu_address(point) - self.tables[point.table].base
        return codec.decode(point, self.profile.order_of(point), data[at:at + point.count])[0]

    async def on_access(self, function_code: int, _start: int, address: int, _count: int,
                        registers: list[int], values: list[int] | list[bool] | None
                        ) -> ExcCodes | None:
        """pymodbus' SimDevice action: take client writes, then expose the current image."""
        table = self.tables.get(_TABLE_OF_FUNCTION.get(function_code, ""))
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
