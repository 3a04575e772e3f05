"""FHIR R4 model layer: element definitions and strict resource validation."""

from .definitions import resource_types
from .validation import validate_resource

__all__ = ["resource_types", "validate_resource"]
