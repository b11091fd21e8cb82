"""Northbound IEC 60870-5-104 outstation: point mapping, spontaneous filter, event buffer, server."""
