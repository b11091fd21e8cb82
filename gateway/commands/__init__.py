"""The command path: the CommandGate policy pipeline and its hash-chained audit log."""
