"""Two connected pseudo-terminals, in process: a serial cable for demos and simulations.

``socat pty,raw,echo=0 pty,raw,echo=0`` does the same, but ``gridgate demo`` must run with no
external program. Each side is a real tty path that pyserial (and so pymodbus) can open; the
bytes written on one side are read on the other. Baud rates are ignored, as with socat.
"""

import asyncio
import os
import tty


class PtyPair:
    """A virtual null-modem cable between two tty paths."""

    def __init__(self) -> None:
        self._masters: list[int] = []
        self._slaves: list[int] = []
        self.paths: tuple[str, str] = ("", "")

    def open(self) -> tuple[str, str]:
        """Create both ends and start copying on the reactor's asyncio loop; returns their paths."""
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            self._masters.append(master)
            self._slaves.append(slave)
        loop = asyncio.get_event_loop()
        first, second = self._masters
        loop.add_reader(first, self._copy, first, second)
        loop.add_reader(second, self._copy, second, first)
        self.paths = (os.ttyname(self._slaves[0]), os.ttyname(self._slaves[1]))
        return self.paths

    @staticmethod
    def _copy(source: int, target: int) -> None:
        try:
            data = os.read(source, 4096)
        except BlockingIOError:
            return
        except OSError:
            return  # the other end closed: nothing to copy any more
        try:
            os.write(target, data)
        except OSError:
            return  # nobody reading on the far side: a real cable drops the bytes too

    def close(self) -> None:
        """Stop copying and close every descriptor."""
        loop = asyncio.get_event_loop()
        for fd in self._masters:
            loop.remove_reader(fd)
        for fd in self._masters + self._slaves:
            os.close(fd)
        self._masters, self._slaves = [], []
