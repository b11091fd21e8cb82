"""Site and profile loading: YAML with line numbers, pydantic models, every error at once."""
