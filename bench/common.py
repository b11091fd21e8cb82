"""What every benchmark needs around the gateway: ports to wait on, percentiles, clean stops."""

import socket
import subprocess
import time


def wait_port(port: int, timeout_s: float = 60.0) -> None:
    """Block until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")
        time.sleep(0.05)


def stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM every process and wait for it: a benchmark leaves nothing running."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(20)
