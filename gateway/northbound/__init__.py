"""Northbound sides: what dispatch centres and other upstream systems talk to, one plugin each
(found through the ``gridgate.northbound`` entry point group, never imported by the core)."""
