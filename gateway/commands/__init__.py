"""The command path, whichever side a command comes from: the policy sections (``policy``), the
CommandGate pipeline (``gate``) and the signed, hash-chained audit log.

Audit modules: ``audit`` (the writer; re-exports what callers import), ``auditrecord`` (events,
hash forms, encoding, typed errors), ``auditkeys`` (key pair, signatures, state file),
``auditfiles`` (rotated parts, the writer's lock), ``auditresume`` (what a writer finds on open),
``auditsync`` (fsync off the reactor), ``auditverify`` (the verifier), ``auditshow``
(``audit show``), ``auditcli`` (``audit init|verify``).
"""
