"""Typed failures. Each carries the context needed to log it once, where it is handled."""


class GatewayError(Exception):
    """Base of every error gridgate raises on purpose."""


class DeviceError(GatewayError):
    """A device did not deliver; ``device`` names it."""

    def __init__(self, device: str, message: str) -> None:
        super().__init__(f"{device}: {message}")
        self.device = device


class DeviceTimeout(DeviceError):
    """No (complete) answer within the configured timeout."""


class DeviceException(DeviceError):
    """The device answered with a protocol exception (Modbus exception code, ...)."""

    def __init__(self, device: str, code: int, message: str = "") -> None:
        super().__init__(device, message or f"exception code {code}")
        self.code = code


class DeviceGarbage(DeviceError):
    """The device answered something that cannot be decoded."""


class CommandRejected(GatewayError):
    """A command was refused before it reached the device; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadReply(DeviceGarbage):
    """The device answered, but the reply failed a check before any value was decoded.

    ``cause`` names the check, so failures can be counted by it: ``function_code``, ``unit``,
    ``transaction``, ``byte_count``, ``length``, ``echo``, ``crc``, ``unframed`` or
    ``undecodable``. The message names the device, the request and what was expected and got.
    """

    def __init__(self, device: str, cause: str, message: str) -> None:
        super().__init__(device, message)
        self.cause = cause


class CommandFailed(GatewayError):
    """A command that failed after the gate accepted it, with what is known of the device.

    ``written``: True when the device acknowledged the write, None when the write was sent but
    not acknowledged (it may have been applied), False when nothing was sent. ``readback`` is the
    value read after the write, when a read-back got that far (``read_back`` True). The gate
    audits each of these before the failure, so the trail shows how far the command went.
    """

    def __init__(self, message: str, written: bool | None, read_back: bool = False, readback: object = None) -> None:
        super().__init__(message)
        self.written = written
        self.read_back = read_back
        self.readback = readback
