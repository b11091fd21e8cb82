"""TCP ports for tests: a block of ports this test run owns, handed out one by one.

Why not "bind port 0, read the number, close, let the server bind it later"? Between the close
and the later bind the port is free for anyone: another test run on the same machine doing the
same thing, or the kernel itself, which picks the source port of every outgoing connection from
the same ephemeral range that port 0 draws from (``net.ipv4.ip_local_port_range``, 32768-60999 on
Linux by default). The test then fails with "address already in use", or talks to a stranger.

So each run (each process importing this module) reserves a block of ``BLOCK_SIZE`` consecutive
ports in ``FIRST_PORT``..``LAST_PORT`` (20000-31999), below the ephemeral range: no outgoing
connection ever takes them, and a block overlapping the range (a machine configured otherwise)
is skipped. A block is reserved by creating ``<LOCK_DIR>/<first port>.lock`` atomically
(``O_CREAT | O_EXCL``) with our PID in it, so two runs never own the same block. A lock whose PID
is dead (a run killed by SIGKILL) is stale and is taken over, under a takeover lock of its own so
that two runs finding the same stale lock cannot both win. The lock is removed when the process
exits (``atexit``).

``next_ports(n)`` hands out the block's ports in order, each checked bindable on 127.0.0.1 at hand
out (a foreign program that does not know about this scheme may sit on one: it is skipped); once
the block is spent another one is reserved. A port is handed out once per run, so a server that
closed it (TIME_WAIT) never hands it to the next test.

Where the component under test can bind port 0 itself and say which port it got (an in-process
listener whose port can be read, a log line naming it), tests do that instead; this module is
for the ports a test must name before the server starts: subprocesses, site files, c104 servers.
"""

import atexit
import errno
import os
import socket
import threading
import time
from pathlib import Path

FIRST_PORT, LAST_PORT = 20000, 31999  # below Linux's default ephemeral range 32768-60999
BLOCK_SIZE = 200
LOCK_DIR = Path(os.environ.get("GRIDGATE_TEST_PORTS_DIR", "/tmp/gridgate-test-ports"))
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
STALE_TAKEOVER_S = 30.0  # a takeover takes microseconds: a takeover lock this old belongs to a dead run

_mutex = threading.Lock()
_owned: list[Path] = []  # our block locks, for atexit
_owner_pid = os.getpid()
_block: list[int] = []  # ports of the current block not yet handed out


class PortsExhausted(RuntimeError):
    """No block of the test port range could be reserved."""


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for source ports of outgoing connections (and for port 0)."""
    try:
        low, high = EPHEMERAL_RANGE_FILE.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def blocks() -> list[int]:
    """First ports of the blocks this module may reserve: inside the range, clear of the ephemeral one."""
    low, high = ephemeral_range()
    return [first for first in range(FIRST_PORT, LAST_PORT - BLOCK_SIZE + 2, BLOCK_SIZE)
            if first + BLOCK_SIZE - 1 < low or first > high]


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _holder(lock: Path) -> int | None:
    """The PID in a lock file; 0 when it is empty or garbled, None when it is gone."""
    try:
        text = lock.read_text()
    except FileNotFoundError:
        return None
    try:
        return int(text.strip() or 0)
    except ValueError:
        return 0


def _create(path: Path) -> bool:
    """Create ``path`` holding our PID, atomically; False when it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)
    return True


def _stale(lock: Path) -> bool:
    holder = _holder(lock)
    if holder is None:
        return False  # gone: plain creation will get it
    if holder == 0:  # being written right now, or left half-written by a dead run
        try:
            return time.time() - lock.stat().st_mtime > STALE_TAKEOVER_S
        except FileNotFoundError:
            return False
    return not _alive(holder)


def _take_over(lock: Path) -> bool:
    """Make a stale ``lock`` ours; only one run can, the others see our live PID afterwards."""
    takeover = lock.with_suffix(".takeover")
    if not _create(takeover):
        try:
            if time.time() - takeover.stat().st_mtime > STALE_TAKEOVER_S:
                takeover.unlink()  # its run died mid-takeover; the next attempt may proceed
        except FileNotFoundError:
            pass
        return False
    try:
        if not _stale(lock):
            return False
        fresh = lock.with_name(f"{lock.name}.{os.getpid()}.tmp")
        fresh.write_text(f"{os.getpid()}\n")
        os.replace(fresh, lock)  # the lock never disappears meanwhile, so O_EXCL creators keep failing
        return True
    finally:
        takeover.unlink(missing_ok=True)


def _reserve() -> list[int]:
    """A new block of ports, its lock created (or taken over) for this process."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    candidates = blocks()
    if not candidates:
        raise PortsExhausted(f"no block of {FIRST_PORT}-{LAST_PORT} lies outside the ephemeral range "
                             f"{ephemeral_range()} ({EPHEMERAL_RANGE_FILE})")
    start = os.getpid() % len(candidates)  # concurrent runs start at different blocks
    for first in candidates[start:] + candidates[:start]:
        lock = LOCK_DIR / f"{first}.lock"
        if lock in _owned:
            continue
        if _create(lock) or (_stale(lock) and _take_over(lock)):
            _owned.append(lock)
            return list(range(first, first + BLOCK_SIZE))
    raise PortsExhausted(f"every block of {FIRST_PORT}-{LAST_PORT} is locked by a live run (see {LOCK_DIR})")


def _bindable(port: int) -> bool:
    """Whether nothing holds ``port`` on 127.0.0.1 (no SO_REUSEADDR: a socket in any state counts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def next_ports(count: int) -> list[int]:
    """``count`` distinct ports of this run's block(s) on 127.0.0.1, none handed out before in this run."""
    handed: list[int] = []
    with _mutex:
        while len(handed) < count:
            if not _block:
                _block.extend(_reserve())
            port = _block.pop(0)
            if _bindable(port):
                handed.append(port)
    return handed


def next_port() -> int:
    """One port, as ``next_ports(1)``."""
    return next_ports(1)[0]


@atexit.register
def _release() -> None:
    """Remove our locks (only in the process that made them: not in a forked child)."""
    if os.getpid() != _owner_pid:
        return
    for lock in _owned:
        if _holder(lock) == _owner_pid:
            lock.unlink(missing_ok=True)
    _owned.clear()
