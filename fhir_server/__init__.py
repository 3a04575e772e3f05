"""FHIR R4 interoperability server for Nordic and Polish health IT."""

FHIR_VERSION = "4.0.1"
__version__ = "0.1.0"
