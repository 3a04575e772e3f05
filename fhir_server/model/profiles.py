"""Validation against a profile: a StructureDefinition held on the server (R4 profiling.html).

``validate_against(resource, sd, resolver)`` walks the profile's element
definitions (the snapshot, or the differential when there is none: both only
add constraints to the base definition, which the strict walk has checked)
over the resource and reports, with the expression of each occurrence:

* cardinality (``min`` / ``max``) of elements and of slices;
* ``type``: a choice element restricted to some types (``value[x]`` -> Quantity);
* ``fixed[x]`` (exact) and ``pattern[x]`` (the value contains the pattern);
* ``binding``: required -> error, extensible -> warning, against the
  expansion of the bound ValueSet (stored or shipped);
* slicing with ``value`` and ``pattern`` discriminators (on ``$this`` or a
  child path): items are assigned to the slice whose fixed/pattern values they
  carry; each slice's cardinality and content is checked, and ``closed``
  slicing refuses items that fit no slice. Other discriminator types
  (``type``, ``profile``, ``exists``) are reported as information, not checked;
* the profile's own FHIRPath invariants (those not from the base definitions).

``check_profiles`` resolves the profiles asked for (error when unknown) and
those claimed in ``meta.profile`` (information when unknown).
"""

from __future__ import annotations

from typing import Any

from ..errors import Issue
from .bindings import Binding, check_code, check_complex

BASE_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
Node = tuple[Any, str]  # (JSON value, expression)


def _prefixed(ed: dict, prefix: str) -> tuple[str, Any] | None:
    for k, v in ed.items():
        if k.startswith(prefix) and len(k) > len(prefix) and k[len(prefix)].isupper():
            return k[len(prefix):], v
    return None


def _matches_pattern(value: Any, pattern: Any) -> bool:
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(_matches_pattern(value.get(k), p) for k, p in pattern.items())
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value] if value is not None else []
        return all(any(_matches_pattern(v, p) for v in items) for p in pattern)
    return value == pattern


class _Profile:
    def __init__(self, sd: dict, resolver, issues: list[Issue]) -> None:
        self.sd = sd
        self.url = sd.get("url") or sd.get("id") or "(profile)"
        self.resolver = resolver
        self.issues = issues
        elements = (sd.get("snapshot") or {}).get("element") or (sd.get("differential") or {}).get("element") or []
        self.children: dict[str, list[dict]] = {}
        self.slices: dict[str, list[dict]] = {}
        self.by_id: dict[str, dict] = {}
        for ed in elements:
            if not isinstance(ed, dict) or not isinstance(ed.get("path"), str):
                continue
            eid = ed.get("id") or (ed["path"] + (f":{ed['sliceName']}" if ed.get("sliceName") else ""))
            self.by_id[eid] = ed
            head, _, last = eid.rpartition(".")
            if ed.get("sliceName") and last.endswith(":" + ed["sliceName"]):
                base = (head + "." if head else "") + last[: -len(ed["sliceName"]) - 1]
                self.slices.setdefault(base, []).append(ed)
            elif head:
                self.children.setdefault(head, []).append(ed)
        self.bindings: dict[str, Binding | None] = {}

    # ------------------------------------------------------------ navigation

    @staticmethod
    def _items(parent: Any, name: str, path: str) -> list[Node]:
        if not isinstance(parent, dict):
            return []
        if name.endswith("[x]"):
            base = name[:-3]
            keys = [k for k in parent if k.startswith(base) and len(k) > len(base) and k[len(base)].isupper()]
        else:
            keys = [name] if name in parent else []
        out: list[Node] = []
        for k in keys:
            v = parent[k]
            if isinstance(v, list):
                out.extend((x, f"{path}.{k}[{i}]") for i, x in enumerate(v))
            else:
                out.append((v, f"{path}.{k}"))
        return out

    def _value_at(self, value: Any, rel_path: str) -> list[Any]:
        current = [value]
        for part in rel_path.split("."):
            nxt = []
            for c in current:
                for v, _ in self._items(c, part, ""):
                    nxt.append(v)
            current = nxt
        return current

    # ------------------------------------------------------------ checks

    def _issue(self, severity: str, code: str, message: str, path: str) -> None:
        self.issues.append(Issue(severity, code, f"{message} (profile {self.url})", [path]))

    def check(self, resource: dict, root_path: str) -> None:
        root_id = self.sd.get("type") or resource.get("resourceType")
        self._constraints(self.by_id.get(root_id, {}), [(resource, root_path)], resource)
        self._children(root_id, [(resource, root_path)], resource)

    def _children(self, eid: str, nodes: list[Node], resource: dict) -> None:
        for ed in self.children.get(eid, []):
            self._element(ed, nodes, resource)

    def _element(self, ed: dict, parents: list[Node], resource: dict) -> None:
        eid = ed.get("id") or ed["path"]
        name = ed["path"].rsplit(".", 1)[-1]
        all_items: list[Node] = []
        for parent, ppath in parents:
            items = self._items(parent, name, ppath)
            self._cardinality(ed, len(items), f"{ppath}.{name}")
            all_items.extend(items)
        self._content(ed, all_items, resource)
        self._children(eid, all_items, resource)
        if eid in self.slices:
            self._sliced(ed, eid, parents, name, resource)

    def _cardinality(self, ed: dict, n: int, path: str) -> None:
        lo = ed.get("min")
        hi = ed.get("max")
        label = ed.get("sliceName")
        what = f"'{ed['path']}'" + (f" (slice '{label}')" if label else "")
        if isinstance(lo, int) and n < lo:
            self._issue("error", "required", f"{what} needs at least {lo} value(s), found {n}", path)
        if isinstance(hi, str) and hi != "*" and hi.isdigit() and n > int(hi):
            self._issue("error", "structure", f"{what} allows at most {hi} value(s), found {n}", path)

    def _content(self, ed: dict, items: list[Node], resource: dict) -> None:
        fixed = _prefixed(ed, "fixed")
        pattern = _prefixed(ed, "pattern")
        allowed = {t.get("code") for t in ed.get("type") or [] if isinstance(t, dict)}
        choice = ed["path"].endswith("[x]")
        binding = self._binding(ed)
        for value, path in items:
            if choice and allowed:
                key = path.rsplit(".", 1)[-1].split("[")[0]
                type_ = key[len(ed["path"].rsplit(".", 1)[-1]) - 3:]
                if type_ and type_[0].lower() + type_[1:] not in allowed and type_ not in allowed:
                    self._issue("error", "structure", f"Type {type_} is not allowed here; allowed: "
                                                      f"{', '.join(sorted(allowed))}", path)
            if fixed is not None and value != fixed[1]:
                self._issue("error", "value", f"Value must be exactly {fixed[1]!r}", path)
            if pattern is not None and not _matches_pattern(value, pattern[1]):
                self._issue("error", "value", f"Value must match the pattern {pattern[1]!r}", path)
            if binding is not None:
                before = len(self.issues)
                if isinstance(value, dict):
                    kind = "Coding" if "coding" not in value and ("code" in value or "system" in value) else "CodeableConcept"
                    check_complex(value, binding, kind, path, self.issues)
                else:
                    check_code(value, binding, "code", path, self.issues)
                for i in self.issues[before:]:
                    i.diagnostics += f" (profile {self.url})"
        self._constraints(ed, items, resource)

    def _binding(self, ed: dict) -> Binding | None:
        b = ed.get("binding")
        if not isinstance(b, dict) or b.get("strength") not in ("required", "extensible") or not b.get("valueSet"):
            return None
        url = b["valueSet"]
        key = f"{b['strength']} {url}"
        if key not in self.bindings:
            from ..terminology.expand import TerminologyError, expand, split_canonical

            base, version = split_canonical(url)
            vs = self.resolver.value_set(base, version)
            binding = None
            if vs is None:
                self._issue("information", "not-found", f"ValueSet {url} is not known: binding of '{ed['path']}' not checked",
                            ed["path"])
            else:
                try:
                    expansion: dict[str, list[str]] = {}
                    for e in expand(vs, self.resolver):
                        expansion.setdefault(e.system, []).append(e.code)
                    binding = Binding(b["strength"], base, expansion)
                except TerminologyError as exc:
                    self._issue("information", "too-costly", f"Binding of '{ed['path']}' to {url} not checked: "
                                                             f"{exc.message}", ed["path"])
            self.bindings[key] = binding
        return self.bindings[key]

    def _constraints(self, ed: dict, items: list[Node], resource: dict) -> None:
        from .invariants import _Checker

        own = [[c.get("key", "?"), c.get("severity", "error"), c.get("human", ""), c["expression"]]
               for c in ed.get("constraint") or []
               if isinstance(c, dict) and c.get("expression") and not str(c.get("source", "")).startswith(BASE_PREFIX)]
        if not own or not items:
            return
        checker = _Checker(resource)
        for value, path in items:
            checker.evaluate(own, ed["path"], value, path, resource)
        for i in checker.issues:
            i.diagnostics += f" (profile {self.url})"
        self.issues.extend(checker.issues)

    # ------------------------------------------------------------ slicing

    def _slice_matches(self, base_ed: dict, slice_ed: dict, value: Any) -> bool | None:
        """True/False, or None when the discriminators cannot be evaluated here."""
        slicing = base_ed.get("slicing") or {}
        sid = slice_ed.get("id") or f"{slice_ed['path']}:{slice_ed['sliceName']}"
        discriminators = slicing.get("discriminator") or []
        if not discriminators:
            return None
        for d in discriminators:
            if d.get("type") not in ("value", "pattern"):
                return None
            dpath = d.get("path", "$this")
            if dpath == "$this":
                target = slice_ed
                values = [value]
            else:
                target = self.by_id.get(f"{sid}.{dpath}") or {}
                values = self._value_at(value, dpath)
            want = _prefixed(target, "fixed") or _prefixed(target, "pattern")
            if want is None:
                continue
            if not any(_matches_pattern(v, want[1]) for v in values):
                return False
        return True

    def _sliced(self, base_ed: dict, eid: str, parents: list[Node], name: str, resource: dict) -> None:
        slices = self.slices[eid]
        rules = (base_ed.get("slicing") or {}).get("rules", "open")
        for parent, ppath in parents:
            items = self._items(parent, name, ppath)
            assigned: set[str] = set()
            for s in slices:
                matched = []
                for value, path in items:
                    verdict = self._slice_matches(base_ed, s, value)
                    if verdict is None:
                        self._issue("information", "not-supported",
                                    f"Slice '{s['sliceName']}' of '{base_ed['path']}' uses a discriminator this server "
                                    f"does not evaluate; not checked", f"{ppath}.{name}")
                        matched = None
                        break
                    if verdict:
                        matched.append((value, path))
                if matched is None:
                    return
                assigned.update(p for _, p in matched)
                self._cardinality(s, len(matched), f"{ppath}.{name}")
                self._content(s, matched, resource)
                self._children(s.get("id") or f"{s['path']}:{s['sliceName']}", matched, resource)
            if rules == "closed":
                for _, path in items:
                    if path not in assigned:
                        self._issue("error", "structure", f"'{base_ed['path']}' is sliced (closed) and this item fits "
                                                          f"no slice", path)


def validate_against(resource: dict, sd: dict, resolver) -> list[Issue]:
    """Issues of `resource` against the profile `sd` (see module docstring)."""
    issues: list[Issue] = []
    rt = resource.get("resourceType")
    if sd.get("type") and sd["type"] != rt:
        return [Issue("error", "invalid", f"Profile {sd.get('url')} is for {sd['type']}, not {rt}", [str(rt)])]
    _Profile(sd, resolver, issues).check(resource, str(rt))
    return issues


def check_profiles(conn, resource: dict, asked: list[str], claimed: list[str]) -> list[Issue]:
    """Validate against each profile asked for (unknown: error) and each claimed one (unknown: information)."""
    from ..terminology.service import DbResolver

    resolver = DbResolver(conn)
    issues: list[Issue] = []
    rt = str(resource.get("resourceType"))
    seen: set[str] = set()
    for url, explicit in [(u, True) for u in asked] + [(u, False) for u in claimed]:
        if url in seen:
            continue
        seen.add(url)
        sd = resolver.resource("StructureDefinition", url)
        if sd is None:
            if explicit:
                issues.append(Issue("error", "not-found", f"Profile {url} is not known to this server", [rt]))
            elif not url.startswith(BASE_PREFIX):
                issues.append(Issue("information", "not-found", f"Claimed profile {url} is not known to this server; "
                                                                "not checked", [f"{rt}.meta.profile"]))
            continue
        issues.extend(validate_against(resource, sd, resolver))
    return issues
