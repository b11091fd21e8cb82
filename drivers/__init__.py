"""Protocol drivers; each package publishes a DriverPlugin under the gridgate.drivers entry point."""
