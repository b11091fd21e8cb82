"""JSON Schemas for editors: one per protocol's profile format, one for site files."""

import json
from pathlib import Path

from gateway.config.site import site_model
from gateway.registry import Plugins


def write_schemas(out: Path, plugins: Plugins) -> list[Path]:
    """Write ``site.schema.json`` and ``profile-<protocol>.schema.json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    models = {"site.schema.json": site_model(plugins.northbound.values())}
    models.update({f"profile-{name}.schema.json": plugin.profile_model for name, plugin in sorted(plugins.drivers.items())})
    written = []
    for filename, model in models.items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        path = out / filename
        path.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written
