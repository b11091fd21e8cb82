"""JSON Schemas for editors: one per protocol's profile format, one for site files.

A device entry's keys beside ``connection:`` belong to its driver; when an installed driver
polls, the polling settings (``poll_s``...) are listed on the device entry so that an editor
still offers and checks them."""

import json
from pathlib import Path
from typing import Any

from gateway.config.polling import PollingConnection
from gateway.config.site import site_model
from gateway.registry import Plugins


def write_schemas(out: Path, plugins: Plugins) -> list[Path]:
    """Write ``site.schema.json`` and ``profile-<protocol>.schema.json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    schemas = {"site.schema.json": _site_schema(plugins)}
    schemas.update({f"profile-{name}.schema.json": plugin.profile_model.model_json_schema()
                    for name, plugin in sorted(plugins.drivers.items())})
    written = []
    for filename, schema in schemas.items():
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        path = out / filename
        path.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


def _site_schema(plugins: Plugins) -> dict[str, Any]:
    schema = site_model(plugins.northbound.values()).model_json_schema()
    if any(issubclass(p.connection_model, PollingConnection) for p in plugins.drivers.values()):
        schema["$defs"]["DeviceEntry"]["properties"].update(PollingConnection.model_json_schema()["properties"])
    return schema
