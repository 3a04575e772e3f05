"""Shared by $meta, $meta-add and $meta-delete (http://hl7.org/fhir/R4/resource-operations.html):
the Meta parameter in and out, and the set arithmetic on profiles, tags and security labels.

Tags and security labels are sets keyed by (system, code) -- version and display are
ignored when matching; profiles are keyed by their full URL.
"""

from __future__ import annotations

from typing import Any

from ..errors import FhirError
from ..model import jsonio
from ..rest.context import Outcome
from ..rest.operations import OperationCall

META_LISTS = ("profile", "tag", "security")


def coding_key(c: Any) -> tuple[str, str]:
    return (str(c.get("system") or ""), str(c.get("code") or "")) if isinstance(c, dict) else ("", "")


def parse_meta_parameter(call: OperationCall) -> dict:
    """The `meta` (valueMeta) of a POSTed Parameters body; 400 when absent or malformed."""
    if call.method != "POST":
        raise FhirError.of(405, "not-supported", f"${call.name} is invoked with POST and a Parameters body")
    if not call.body.strip():
        raise FhirError.of(400, "required", f"${call.name} needs a Parameters body with a 'meta' parameter")
    body = jsonio.parse_plain(call.body)
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError.of(400, "invalid", f"${call.name} takes a Parameters resource", "resourceType")
    metas = [p.get("valueMeta") for p in body.get("parameter") or [] if isinstance(p, dict) and p.get("name") == "meta"]
    if len(metas) != 1 or not isinstance(metas[0], dict):
        raise FhirError.of(400, "required", f"${call.name} needs exactly one 'meta' parameter with a valueMeta", "Parameters.parameter")
    meta = metas[0]
    for key in META_LISTS:
        items = meta.get(key, [])
        if not isinstance(items, list):
            raise FhirError.of(400, "structure", f"Meta.{key} must be an array", f"Parameters.parameter[0].valueMeta.{key}")
        for i, item in enumerate(items):
            where = f"Parameters.parameter[0].valueMeta.{key}[{i}]"
            if key == "profile" and not (isinstance(item, str) and item):
                raise FhirError.of(400, "value", "A profile is a canonical URL string", where)
            if key != "profile" and not (isinstance(item, dict) and item.get("code")):
                raise FhirError.of(400, "required", f"A {key} is a Coding with a code", where)
    return meta


def meta_parameters(meta: dict) -> Outcome:
    """`Parameters { return: Meta }` as the answer of the three operations."""
    out = {k: meta[k] for k in ("versionId", "lastUpdated", *META_LISTS) if meta.get(k)}
    body = {"resourceType": "Parameters", "parameter": [{"name": "return", "valueMeta": out}]}
    return Outcome(status=200, body=jsonio.dumps(body))


def add_to(meta: dict, extra: dict) -> dict:
    """`meta` with the profiles, tags and labels of `extra` added (no duplicates)."""
    out = dict(meta)
    profiles = list(out.get("profile") or [])
    for p in extra.get("profile") or []:
        if p not in profiles:
            profiles.append(p)
    if profiles:
        out["profile"] = profiles
    for key in ("tag", "security"):
        have = list(out.get(key) or [])
        keys = {coding_key(c) for c in have}
        for c in extra.get(key) or []:
            if coding_key(c) not in keys:
                have.append(c)
                keys.add(coding_key(c))
        if have:
            out[key] = have
    return out


def remove_from(meta: dict, gone: dict) -> dict:
    """`meta` without the profiles, tags and labels of `gone` (absent ones are no error)."""
    out = dict(meta)
    drop_profiles = set(gone.get("profile") or [])
    if "profile" in out:
        out["profile"] = [p for p in out["profile"] if p not in drop_profiles]
    for key in ("tag", "security"):
        drop = {coding_key(c) for c in gone.get(key) or []}
        if key in out:
            out[key] = [c for c in out[key] if coding_key(c) not in drop]
    return {k: v for k, v in out.items() if v not in ([], None)}
