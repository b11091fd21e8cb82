"""gridgate: IoT gateway and protocol adapter hub for storage, PV and EV-charging sites."""
