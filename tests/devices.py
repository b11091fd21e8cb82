"""Building Device objects and socat cables for driver and simulator tests."""

import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from drivers.modbus.profile import ModbusConnection, ModbusProfile
from gateway.model import Device


def modbus_device(name: str, profile: ModbusProfile, poll_s: float = 0.2, timeout_s: float = 0.2,
                  retries: int = 0, offline_after: int = 3, **connection: Any) -> Device:
    """A Device of ``profile`` on the given Modbus connection (host/port or serial, unit...)."""
    polling = {"poll_s": poll_s, "timeout_s": timeout_s, "retries": retries, "offline_after": offline_after}
    return Device(name, profile, Path(f"{name}.yaml"), ModbusConnection(**connection, **polling), {"device": name})


def on_port(device: Device, port: int) -> Device:
    """The same device, reached on ``port`` (a simulator bound to port 0 tells which)."""
    return replace(device, connection=device.connection.model_copy(update={"port": port}))


def socat_cable(folder: Path) -> Iterator[tuple[str, str]]:
    """A socat pseudo-terminal pair (a null-modem cable); yields both tty paths, then stops socat."""
    if shutil.which("socat") is None:
        raise RuntimeError("socat is not installed: apt-get install socat")
    a, b = folder / "ttyA", folder / "ttyB"
    process = subprocess.Popen(["socat", "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not (a.exists() and b.exists()):
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError("socat did not create the pty pair")
        time.sleep(0.01)
    try:
        yield str(a), str(b)
    finally:
        process.terminate()
        process.wait(5)
