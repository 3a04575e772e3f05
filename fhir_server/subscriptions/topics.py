"""Subscription topics, read from data: resources/subscription-topics/*.json.

Each file is a SubscriptionTopic in the R4B shape the Backport IG builds on
(http://hl7.org/fhir/R4B/subscriptiontopic.html): `resourceTrigger` with
`supportedInteraction` (create | update | delete), `queryCriteria`
(`previous`, `current`, `resultForCreate`, `resultForDelete`, `requireBoth`)
and/or `fhirPathCriteria` (FHIRPath over %previous and %current), and
`canFilterBy` naming the search parameters a subscriber may filter on.
Adding a topic is adding a file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import FhirError

TOPICS_DIR = Path(__file__).resolve().parents[2] / "resources" / "subscription-topics"
SD = "http://hl7.org/fhir/StructureDefinition/"


@dataclass
class Trigger:
    resource: str  # resource type
    interactions: tuple[str, ...]
    query_previous: str | None = None
    query_current: str | None = None
    result_for_create: str = "test-passes"
    result_for_delete: str = "test-passes"
    require_both: bool = False
    fhirpath: str | None = None


@dataclass
class Topic:
    url: str
    title: str
    resource: dict  # the SubscriptionTopic as shipped
    triggers: list[Trigger] = field(default_factory=list)
    filters: dict[str, set[str]] = field(default_factory=dict)  # resource type -> filter parameters

    def check_filter(self, res_type: str, params: list[tuple[str, str]]) -> None:
        """400 unless every filter parameter is one the topic's canFilterBy allows."""
        allowed = self.filters.get(res_type)
        if allowed is None:
            raise FhirError.of(400, "invalid", f"Topic {self.url} cannot filter on {res_type}", "Subscription.criteria")
        for name, _value in params:
            if name.split(":", 1)[0] not in allowed:
                raise FhirError.of(
                    400, "invalid",
                    f"Topic {self.url} does not allow filtering {res_type} by '{name}' (allowed: {', '.join(sorted(allowed))})",
                    "Subscription.criteria",
                )


def _type_of(uri: str) -> str:
    return uri[len(SD):] if uri.startswith(SD) else uri


def topic_from_resource(res: dict) -> Topic:
    triggers = []
    for t in res.get("resourceTrigger") or []:
        q = t.get("queryCriteria") or {}
        triggers.append(Trigger(
            resource=_type_of(t["resource"]),
            interactions=tuple(t.get("supportedInteraction") or ("create", "update", "delete")),
            query_previous=q.get("previous"),
            query_current=q.get("current"),
            result_for_create=q.get("resultForCreate", "test-passes"),
            result_for_delete=q.get("resultForDelete", "test-passes"),
            require_both=bool(q.get("requireBoth", False)),
            fhirpath=t.get("fhirPathCriteria"),
        ))
    filters: dict[str, set[str]] = {}
    for f in res.get("canFilterBy") or []:
        filters.setdefault(_type_of(f.get("resource", "")), set()).add(f["filterParameter"])
    return Topic(url=res["url"], title=res.get("title", res["url"]), resource=res, triggers=triggers, filters=filters)


@lru_cache(maxsize=1)
def all_topics() -> dict[str, Topic]:
    """url -> Topic, from every JSON file in TOPICS_DIR."""
    out: dict[str, Topic] = {}
    for path in sorted(TOPICS_DIR.glob("*.json")):
        topic = topic_from_resource(json.loads(path.read_text(encoding="utf-8")))
        out[topic.url] = topic
    return out


def lookup(url: str) -> Topic | None:
    return all_topics().get(url)
