"""Protocol-free simulation support: the value engine behind simulated devices, the control API
and its client, pseudo-terminal pairs for serial links, the simulator runner and the live table."""
