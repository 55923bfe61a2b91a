"""The HTTP API (prefix /api/v1): routes, schemas, dependencies and problem+json errors."""
