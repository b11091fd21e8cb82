"""Finding a SunSpec device's models over Modbus TCP: the ``SunS`` marker, then the model chain.

A SunSpec device starts its map with the marker ``SunS`` (0x5375 0x6E53) in two holding
registers at 40000, 50000 or 0 (PDU addresses; tried in that order, the first being by far the
most common). The models follow back to back: an ID register, L (the length of the model's
body in registers), the body; ID 0xFFFF ends the chain.

The walk trusts nothing the device says: every reply must carry the registers asked for, a
model that would run past register 65535 or a chain of more than ``MAX_MODELS`` models ends
the walk with an error (addresses only grow, so these two also end any chain that loops), and
every failure is a typed error naming ``host:port unit N`` and the address being read. A known
model's registers are read whole (at most 125 per request): its count points and model 1's
strings are in them.

Connects with pymodbus' ``AsyncModbusTcpClient`` directly: discovery is a one-off run from the
command line, not a polled device, so it needs none of ``ModbusLink``'s queueing or backoff.
"""

from dataclasses import dataclass

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from drivers.modbus.sunspec.models import END_ID, definition
from gateway.errors import DeviceError, DeviceException, DeviceGarbage, DeviceTimeout

MARKER = (0x5375, 0x6E53)  # "SunS"
BASES = (40000, 50000, 0)
MAX_MODELS = 200
MAX_READ = 125


class NotSunSpec(DeviceError):
    """The device answers, but shows no ``SunS`` marker at any base address."""


@dataclass(frozen=True)
class FoundModel:
    """One model of the chain: its ID, where its ID register is, L, and (for a model with a
    definition) its registers from the ID register on."""

    id: int
    address: int
    length: int
    registers: tuple[int, ...] | None

    @property
    def known(self) -> bool:
        """Whether SunSpec (as pysunspec2 ships it) defines this model."""
        return self.registers is not None


@dataclass(frozen=True)
class Discovery:
    """What a device showed: where its marker is and its models in chain order."""

    host: str
    port: int
    unit: int
    base: int
    models: tuple[FoundModel, ...]


class _Reader:
    """Holding-register reads on one client, each reply checked, failures typed."""

    def __init__(self, client: AsyncModbusTcpClient, who: str, unit: int) -> None:
        self.client, self.who, self.unit = client, who, unit

    async def read(self, address: int, count: int) -> list[int]:
        """``count`` registers from ``address``, in requests of at most ``MAX_READ``."""
        words: list[int] = []
        for start in range(address, address + count, MAX_READ):
            words += await self._request(start, min(MAX_READ, address + count - start))
        return words

    async def _request(self, address: int, count: int) -> list[int]:
        where = f"{count} register(s) at {address}"
        try:
            reply = await self.client.read_holding_registers(address, count=count, device_id=self.unit)
        except ConnectionException as exc:
            raise DeviceError(self.who, f"connection lost reading {where}: {exc}") from exc
        except ModbusIOException as exc:
            raise DeviceTimeout(self.who, f"no answer reading {where}") from exc
        except ModbusException as exc:
            raise DeviceGarbage(self.who, f"reading {where}: {exc}") from exc
        if reply.isError():
            code = getattr(reply, "exception_code", 0)
            raise DeviceException(self.who, code, f"exception {code} reading {where}")
        words = list(reply.registers)
        if len(words) != count:
            raise DeviceGarbage(self.who, f"{len(words)} register(s) in the reply to {where}")
        return words


async def discover(host: str, port: int, unit: int, timeout_s: float) -> Discovery:
    """The marker and model chain of the device at ``host:port``, unit id ``unit``.

    Raises ``NotSunSpec``, ``DeviceTimeout``, ``DeviceException`` (an exception reply inside the
    chain), ``DeviceGarbage`` (a malformed reply, or a chain running past 65535 or longer than
    ``MAX_MODELS``) or ``DeviceError`` (no connection); each names the device and address.
    """
    who = f"{host}:{port} unit {unit}"
    client = AsyncModbusTcpClient(host, port=port, timeout=timeout_s, retries=0)
    try:
        if not await client.connect():
            raise DeviceError(who, "cannot connect (refused, unreachable, or no answer in time)")
        reader = _Reader(client, who, unit)
        base = await _find_marker(reader)
        return Discovery(host, port, unit, base, tuple(await _walk(reader, base)))
    finally:
        client.close()


async def _find_marker(reader: _Reader) -> int:
    """The first base address holding ``SunS``; an exception reply there means "not here"."""
    for base in BASES:
        try:
            if tuple(await reader.read(base, 2)) == MARKER:
                return base
        except DeviceException:
            continue
    raise NotSunSpec(reader.who, "no SunSpec marker 'SunS' (0x5375 0x6E53) in holding registers "
                                 + ", ".join(str(b) for b in BASES))


async def _walk(reader: _Reader, base: int) -> list[FoundModel]:
    """The models from ``base + 2`` to the end model (ID 0xFFFF)."""
    models: list[FoundModel] = []
    address = base + 2
    while True:
        if address + 2 > 65536:
            raise DeviceGarbage(reader.who, f"the model chain runs past register 65535 (next header at {address})")
        model_id, length = await reader.read(address, 2)
        if model_id == END_ID:
            return models
        if len(models) == MAX_MODELS:
            raise DeviceGarbage(reader.who, f"more than {MAX_MODELS} models, the last at {address}: "
                                            "no SunSpec device has that many")
        end = address + 2 + length
        if end > 65536:
            raise DeviceGarbage(reader.who, f"model {model_id} at {address} with L {length} runs past register 65535")
        registers = tuple(await reader.read(address, 2 + length)) if definition(model_id) is not None else None
        models.append(FoundModel(model_id, address, length, registers))
        address = end
