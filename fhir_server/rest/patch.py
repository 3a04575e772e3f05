"""The three FHIR patch formats as pure functions on resource dicts.

See http://hl7.org/fhir/R4/http.html#patch. Every function returns a new dict
and leaves its input untouched, so a failed patch can never half-apply.
Whether the result is still a valid resource (id, resourceType, profile) is
the caller's concern.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer

from fhir_server.errors import FhirError
from fhir_server.rest.fhirpath_patch import apply_fhirpath_patch

__all__ = ["apply_json_patch", "apply_fhirpath_patch", "apply_merge_patch", "apply_patch"]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
_JSON_TYPES = {"application/json", "application/fhir+json", "json", "application/json+fhir"}


def apply_json_patch(resource: dict, patch: Any) -> dict:
    """RFC 6902 JSON Patch; a failed `test` or a missing path is 422, a malformed patch 400."""
    if not isinstance(resource, dict):
        raise FhirError.of(400, "invalid", "The resource to patch must be a JSON object")
    if not isinstance(patch, list) or not all(isinstance(op, dict) for op in patch):
        raise FhirError.of(400, "invalid", "A JSON Patch document must be an array of operation objects")
    try:
        compiled = jsonpatch.JsonPatch(copy.deepcopy(patch))
    except (jsonpatch.InvalidJsonPatch, jsonpointer.JsonPointerException, TypeError, KeyError, AttributeError) as exc:
        raise FhirError.of(400, "invalid", f"Malformed JSON Patch: {exc}") from None
    try:
        result = compiled.apply(copy.deepcopy(resource), in_place=True)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise FhirError.of(422, "processing", f"JSON Patch test failed: {exc}") from None
    except jsonpatch.InvalidJsonPatch as exc:  # e.g. op missing 'value', unknown op
        raise FhirError.of(400, "invalid", f"Malformed JSON Patch: {exc}") from None
    except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException, IndexError, KeyError, TypeError) as exc:
        raise FhirError.of(422, "processing", f"JSON Patch cannot be applied: {exc}") from None
    if not isinstance(result, dict):
        raise FhirError.of(422, "processing", "JSON Patch replaced the resource with a non-object")
    return result


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def apply_merge_patch(resource: dict, patch: Any) -> dict:
    """RFC 7386 JSON Merge Patch: objects merge recursively, null deletes, arrays replace."""
    if not isinstance(resource, dict):
        raise FhirError.of(400, "invalid", "The resource to patch must be a JSON object")
    if not isinstance(patch, dict):
        raise FhirError.of(400, "invalid", "A merge patch for a resource must be a JSON object")
    # _merge copies patch values but shares untouched subtrees with `resource`.
    return _merge(copy.deepcopy(resource), patch)


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def apply_patch(resource: dict, body: Any, content_type: str) -> dict:
    """Pick the patch format from the Content-Type and, for plain JSON, the body's shape.

    Clients commonly send merge patches and JSON Patch arrays as plain
    application/json, so those are accepted alongside the registered types.
    """
    media = _media_type(content_type)
    if media == JSON_PATCH:
        return apply_json_patch(resource, body)
    if media == MERGE_PATCH:
        return apply_merge_patch(resource, body)
    if media in _JSON_TYPES:
        if isinstance(body, dict) and body.get("resourceType") == "Parameters":
            return apply_fhirpath_patch(resource, body)
        if isinstance(body, dict):
            return apply_merge_patch(resource, body)
        if isinstance(body, list):
            return apply_json_patch(resource, body)
        raise FhirError.of(400, "invalid", "A PATCH body must be a JSON object or array")
    raise FhirError.of(
        415,
        "not-supported",
        f"Unsupported PATCH content type '{content_type}'; use {JSON_PATCH}, {MERGE_PATCH} "
        "or application/fhir+json with a FHIRPath Patch Parameters resource",
    )
