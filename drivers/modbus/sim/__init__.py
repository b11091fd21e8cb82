"""Simulated Modbus devices built from the same profiles the driver reads: the register image
(``device``), the TCP/RTU servers and the faults they can be told to show (``faults``), and the
``ISimulator`` the core starts for ``gridgate simulate`` (``server``)."""
