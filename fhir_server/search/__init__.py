"""FHIR R4 search: write-time index extraction and SQL query building."""
