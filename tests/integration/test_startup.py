"""`gridgate run` either comes up or exits: a start-up failure prints one line naming its cause, exit 1, in seconds."""

import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.ports import next_port

pytestmark = pytest.mark.integration


def _site(folder: Path, iec_port: int) -> Path:
    (folder / "one.yaml").write_text(yaml.safe_dump({"model": "ONE", "kind": "other", "protocol": "modbus", "points": [
        {"id": "r0", "address": 0, "type": "uint16"}]}))
    site = {"site": "startup", "spool": {"path": str(folder / "spool.db")},
            "devices": [{"name": "d0", "profile": "one", "connection": {"host": "127.0.0.1", "port": next_port()}}],
            "master_groups": [{"name": "dispatch", "bind": "127.0.0.1", "port": iec_port, "allowed_masters": ["127.0.0.1"],
                               "common_address": 1, "points": [{"point": "d0.r0", "ioa": 1, "type": "M_ME_NC_1"}]}]}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


def _run(site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", "run", str(site)], cwd=site.parent, capture_output=True,
                          text=True, timeout=20)


def test_a_taken_104_port_exits_1_naming_group_and_address(tmp_path: Path) -> None:
    """Another program on the group's port: exit 1 with one line naming the group and address, no traceback."""
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    try:
        result = _run(_site(tmp_path, port))
    finally:
        squatter.close()
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"gridgate cannot run: 104 group dispatch: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_corrupt_spool_exits_1_naming_the_file(tmp_path: Path) -> None:
    """A spool file that is not SQLite: exit 1 with one line naming the file, no traceback, nothing overwritten."""
    site = _site(tmp_path, next_port())
    spool = tmp_path / "spool.db"
    spool.write_bytes(b"this is not a database" * 100)
    result = _run(site)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "gridgate cannot run:" in result.stderr and str(spool) in result.stderr
    assert "Traceback" not in result.stderr
    assert spool.read_bytes() == b"this is not a database" * 100


def test_salvage_spool_moves_a_corrupt_spool_aside_and_runs(tmp_path: Path) -> None:
    """With --salvage-spool the corrupt file is renamed with a time stamp (bytes kept), the gateway comes
    up on a new spool and says so in one WARNING; SIGTERM then ends it cleanly."""
    site = _site(tmp_path, next_port())
    spool = tmp_path / "spool.db"
    spool.write_bytes(b"this is not a database" * 100)
    process = subprocess.Popen([sys.executable, "-m", "gateway", "run", str(site), "--salvage-spool"],
                               cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            if "device(s) started" in line:
                break
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=20)
    finally:
        process.kill()
    [moved] = list(tmp_path.glob("spool.db.corrupt-*"))
    assert moved.read_bytes() == b"this is not a database" * 100
    salvaged = [line for line in lines if "could not be used" in line]
    assert len(salvaged) == 1 and str(moved) in salvaged[0] and "0 readable rows salvaged" in salvaged[0], lines
    assert process.returncode == 0, "".join(lines)[-2000:]
    assert sqlite3.connect(spool).execute("PRAGMA quick_check").fetchone()[0] == "ok"
