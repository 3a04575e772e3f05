"""REST-layer helpers (patch formats, request handling)."""
