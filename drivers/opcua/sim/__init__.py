"""Simulated OPC UA devices built from the same profiles the driver reads, so the driver, the
demo and ``gridgate simulate`` have a real OPC UA server to talk to: one asyncua server per
endpoint with the profile's namespaces and NodeIds (``nodes``), scaled raw values and status
faults per device (``device``), the endpoint's security, users and restarts (``endpoint``), its
self-signed certificate (``certs``), and the ``ISimulator`` tying them to the reactor (``server``)."""
