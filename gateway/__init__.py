"""gridgate: IoT gateway and protocol adapter hub for storage, PV and EV-charging sites.

The hub core (this package's modules, ``config/``, ``commands/``, ``simulation/``) moves samples
from drivers to the point table, the spool, InfluxDB and the northbound sides, and commands the
other way through the CommandGate. It knows no protocol: drivers (``drivers/``) and northbound
sides (``northbound/``) are plugins found through entry points (``registry``). ``iec104/`` is
what both IEC 104 sides share; ``commissioning/`` holds the tools run against a gateway
(dispatch test, point tables, demo), which the gateway itself never imports.
"""
