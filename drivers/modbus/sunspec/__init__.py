"""SunSpec devices over Modbus: find the model chain (``discovery``), lay models out from the
SunSpec definitions (``models``), and draft a Modbus profile from them (``draft``);
``gridgate discover`` (``command``) runs the three."""
