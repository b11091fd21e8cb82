"""tests/ports.py: disjoint blocks per run, stale locks taken over, locks gone at exit, ephemeral range avoided."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import ports

REPO = Path(__file__).resolve().parents[2]
# a run: reserve ports, say which and in which lock, then wait for a line on stdin before exiting
RUN = ("import sys; from tests import ports; got = ports.next_ports(3); "
       "print(*got, *[p.name for p in ports._owned], flush=True); sys.stdin.readline()")


def _run(lock_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUN], cwd=REPO, text=True, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env={**os.environ, "GRIDGATE_TEST_PORTS_DIR": str(lock_dir)})


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_two_runs_get_disjoint_blocks_and_release_them_at_exit(tmp_path: Path) -> None:
    """Two live runs: different lock files holding their PIDs, ports from different blocks; no lock after exit."""
    first, second = _run(tmp_path), _run(tmp_path)
    try:
        a, b = first.stdout.readline().split(), second.stdout.readline().split()
        assert a[3] != b[3] and not set(a[:3]) & set(b[:3])
        assert (tmp_path / a[3]).read_text().strip() == str(first.pid)
        assert (tmp_path / b[3]).read_text().strip() == str(second.pid)
        assert [int(p) for p in a[:3]] == sorted(int(p) for p in a[:3])
        assert all(int(p) // ports.BLOCK_SIZE * ports.BLOCK_SIZE == int(a[3].split(".")[0]) for p in a[:3])
    finally:
        for run in (first, second):
            run.communicate("\n", timeout=30)
    assert list(tmp_path.iterdir()) == []


def test_a_lock_of_a_dead_run_is_taken_over(tmp_path: Path) -> None:
    """Every block locked by a run that died: a new run takes one over and writes its own PID in it."""
    dead = _dead_pid()
    for first in ports.blocks():
        (tmp_path / f"{first}.lock").write_text(f"{dead}\n")
    run = _run(tmp_path)
    try:
        lock = run.stdout.readline().split()[3]
        assert (tmp_path / lock).read_text().strip() == str(run.pid)
    finally:
        run.communicate("\n", timeout=30)
    assert not (tmp_path / lock).exists()
    assert len(list(tmp_path.iterdir())) == len(ports.blocks()) - 1


def test_no_free_block_is_an_error_naming_the_lock_dir(tmp_path: Path) -> None:
    """Every block locked by a live run: the run fails, saying so, instead of sharing a block."""
    for first in ports.blocks():
        (tmp_path / f"{first}.lock").write_text(f"{os.getpid()}\n")
    done = subprocess.run([sys.executable, "-c", RUN], cwd=REPO, capture_output=True, text=True, input="\n",
                          env={**os.environ, "GRIDGATE_TEST_PORTS_DIR": str(tmp_path)})
    assert done.returncode != 0 and "PortsExhausted" in done.stderr and str(tmp_path) in done.stderr


def test_blocks_overlapping_the_ephemeral_range_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the ephemeral range starting at 20500, only the blocks wholly below it remain."""
    (tmp_path / "range").write_text("20500\t60999\n")
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE_FILE", tmp_path / "range")
    assert ports.blocks() == [20000, 20200]
    (tmp_path / "range").write_text("1024\t65535\n")
    assert ports.blocks() == []
