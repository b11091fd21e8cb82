"""The IEC 60870-5-104 outstation plugin: its site section (``master_groups``) and cross-checks,
the outstation per master group, command points, event buffer, fail-safe and TLS."""
