"""``gridgate audit init|verify``: make the signing key, check a log and say what it proves.

``verify`` exit codes: 0 OK (signed, signatures checked with ``--public-key``, no error; warnings
such as unsealed records may be printed), 1 an error (edit, re-chain, removal, cut, replaced or
empty file, unreadable file or key), 3 intact but not proven (an unsigned log, or no
``--public-key`` given).
"""

import argparse
import sys
from pathlib import Path

from gateway.commands.auditfiles import log_files
from gateway.commands.auditkeys import init_key
from gateway.commands.auditrecord import AuditError
from gateway.commands.auditverify import VerifyResult, verify

EXIT_OK, EXIT_ERROR, EXIT_UNPROVEN = 0, 1, 3


def cmd_init(args: argparse.Namespace) -> int:
    """Write KEY (private, 0600) and KEY.pub; refuse to overwrite without --force."""
    try:
        private, public, kid = init_key(args.key, args.public_key, args.force)
    except AuditError as exc:
        print(exc, file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {private} (private signing key, mode 0600: keep it on the gateway, never with the log)")
    print(f"wrote {public} (public key: give it to whoever verifies the log)")
    print(f"key id {kid}")
    print(f"site file: audit: {{key: {private}}}")
    return EXIT_OK


def expand(names: list[str]) -> list[Path]:
    """Each FILE with its rotated parts, each folder as its logs; every file once."""
    seen: dict[Path, Path] = {}
    for name in names:
        for path in log_files(name):
            seen.setdefault(path.resolve(), path)
    return list(seen.values())


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify and print one status line, then warnings and notes; see the module docstring for exit codes."""
    files = expand(args.files)
    try:
        result = verify(files, args.public_key, args.state)
    except AuditError as exc:
        print(exc, file=sys.stderr)
        return EXIT_ERROR
    for line in report(result):
        print(line, file=sys.stderr if line.startswith(("ERROR", "  ")) else sys.stdout)
    return {"ok": EXIT_OK, "error": EXIT_ERROR}.get(result.status, EXIT_UNPROVEN)


def report(result: VerifyResult) -> list[str]:
    """The lines ``verify`` prints: status first."""
    count = f"{result.records} records"
    if len(result.files) > 1 and result.parts:
        count += f" in {len(result.files)} files (parts {result.parts[0]}-{result.parts[1]})"
    last = result.last_checkpoint
    sealed = f"; last checkpoint seq {last['seq']} ({last.get('reason')}, {last.get('ts')})" if last else ""
    if result.status == "error":
        lines = [f"ERROR: {result.reason}", f"  {result.records} record(s) intact before it"]
    elif result.status == "ok":
        lines = [f"OK: {count}, chain intact ({result.algorithm}), signed by key {result.key_id}{sealed}"]
    elif result.status == "unproven":
        lines = [f"UNPROVEN: {count}, chain intact ({result.algorithm}), signed by key {result.key_id}, signatures "
                 f"not checked: give --public-key KEY.pub"]
    else:
        lines = [f"UNSIGNED: {count}, chain intact ({result.algorithm}), no signed checkpoint: an edit re-hashed "
                 f"without a key, or records cut from the end, cannot be detected"]
    lines += [f"WARNING: {warning}" for warning in result.warnings]
    lines += [f"NOTE: {note}" for note in result.notes]
    if result.status != "error" and result.records:
        lines.append(f"last hash {result.last_hash} (seq {result.last_seq})")
    return lines
