"""Octet-level spoiling shared by the fuzzers of every protocol (tests/fuzz104.py, tests/fuzz_modbus.py)."""

import random

GENERIC = ("flip", "truncate", "extend")


def spoil(rng: random.Random, out: bytearray, how: str, max_flips: int, max_extra: int) -> None:
    """Apply a protocol-blind mutation in place: flip 1..``max_flips`` bits, cut the tail (at least one
    octet stays), or append 1..``max_extra`` random octets. Anything else in ``how`` is left alone."""
    if how == "flip" and out:
        for _ in range(rng.randrange(1, max_flips + 1)):
            at = rng.randrange(len(out))
            out[at] ^= 1 << rng.randrange(8)
    elif how == "truncate" and len(out) > 1:
        del out[rng.randrange(1, len(out)):]
    elif how == "extend":
        out += bytes(rng.randrange(256) for _ in range(rng.randrange(1, max_extra + 1)))
