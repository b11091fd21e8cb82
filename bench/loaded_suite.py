"""The test suite while a CPU burner occupies every core: does it pass, run after run, and how long does it take?

A substation gateway shares its two cores with other work, and CI machines are loaded; a suite
that passes only on an idle machine hides timing assumptions. This starts one busy-looping
process per core (``--burners``, default ``os.cpu_count()``), runs the README's test command
``--runs`` times in a row, and prints one line per run and a summary line; exit 1 when any run
failed.

    .venv/bin/python bench/loaded_suite.py --runs 3
"""

import argparse
import multiprocessing
import os
import subprocess
import sys
import time

TEST_COMMAND = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]


def burn() -> None:
    """Spin until killed."""
    while True:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 2)
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (default: the whole suite)")
    args = parser.parse_args()
    burners = [multiprocessing.Process(target=burn, daemon=True) for _ in range(args.burners)]
    for burner in burners:
        burner.start()
    results = []
    try:
        for run in range(1, args.runs + 1):
            started = time.monotonic()
            done = subprocess.run(TEST_COMMAND + args.pytest_args, capture_output=True, text=True)
            seconds = time.monotonic() - started
            tail = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
            results.append((done.returncode, seconds))
            print(f"run {run}: exit {done.returncode} in {seconds:.0f} s under {args.burners} burner(s): {tail}",
                  flush=True)
            if done.returncode:
                print(done.stdout[-6000:], file=sys.stderr)
    finally:
        for burner in burners:
            burner.kill()
    failed = sum(1 for code, _ in results if code)
    durations = sorted(seconds for _, seconds in results)
    print(f"loaded suite: {len(results) - failed}/{len(results)} runs passed, "
          f"duration min {durations[0]:.0f} s median {durations[len(durations) // 2]:.0f} s max {durations[-1]:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
