"""Session 7 adversarial tests, searches: a hostile patient-portal user tries to reach another
patient's data through the search elision (search/access.py implied_by_search: the compartment
condition left out when `patient=<own id>` or `<compartment param>:Patient=<own id>` is in the
search), learned search shapes, includes, chains and a guardian's acting-for, over HTTP with
real tokens. The history of the findings is in test_adversarial_reads.py."""

from __future__ import annotations

import pytest

from .adversarial_support import (
    consent,
    _years_ago,
    date,
    ids,
    new_id,
    obs,
    patient,
    proxy_provision,
    put,
    ref,
    related_person,
    search,
)

# ---------------------------------------------------------------- search elision


@pytest.fixture
def world(client, pair):
    """Mine, the other's, a Group-subject one under my id, a report of the other's about my Observation."""
    me, other = pair
    put(client, {"resourceType": "Group", "id": me, "type": "person", "actual": True, "member": [{"entity": ref(f"Patient/{other}")}]})
    shared = obs(client, ref(f"Patient/{me}"), performer=[ref(f"Patient/{other}")])  # in both compartments
    mine = {obs(client, ref(f"Patient/{me}")), shared}
    their_own = obs(client, ref(f"Patient/{other}"))
    theirs = {their_own, obs(client, ref(f"Group/{me}")),
              obs(client, ref(f"https://other.example/fhir/Patient/{me}")), obs(client, ref(f"#{me}"), contained=[{"resourceType": "Patient", "id": me}])}
    dr = new_id("dr")
    put(client, {"resourceType": "DiagnosticReport", "id": dr, "status": "final", "code": {"text": "x"},
                 "subject": ref(f"Patient/{other}"), "result": [ref(f"Observation/{sorted(mine)[0]}")]})
    return {"me": me, "other": other, "mine": mine, "shared": shared, "their_own": their_own, "theirs": theirs, "dr": dr}


@pytest.mark.parametrize("params", [
    [("patient", "{me}")],
    [("patient:Patient", "{me}")],
    [("subject:Patient", "{me}")],
    [("subject", "{me}")],
    [("subject", "Patient/{me}")],
    [("patient", "{me},{other}")],
    [("patient", "{other},{me}")],
    [("patient", "{me}"), ("patient", "{other}")],
    [("patient", "{me}"), ("subject", "{other}")],
    [("patient", "{me}"), ("performer", "{other}")],
    [("patient", "{other}")],
    [("patient:Patient", "{other}")],
    [("subject", "Group/{me}")],
    [("patient:missing", "false")],
    [("patient:missing", "true")],
    [("patient", "{me}"), ("patient:missing", "false")],
    [("patient", "https://other.example/fhir/Patient/{me}")],
    [("patient", "#{me}")],
    [("patient.name", "Other")],
    [("patient", "{me}"), ("patient.name", "Other")],
    [("subject:Group.member", "{other}")],
    [("patient", "{me}"), ("_id", "{theirs0}")],
    [("patient", "{me}"), ("_has:DiagnosticReport:result:subject", "{other}")],
    [("patient", "{me}"), ("_count", "1")],
    [("patient", "{me}"), ("_sort", "-_lastUpdated")],
    [("patient", "{me}"), ("_total", "accurate")],
    [("patient", "{me}\\,{other}")],
    [("patient", " {me}")],
    [("patient", "{me} ")],
])
def test_observation_search_only_mine(client, as_patient, world, params):
    me, other = world["me"], world["other"]
    fill = {"me": me, "other": other, "theirs0": sorted(world["theirs"])[0]}
    q = [(k.format(**fill), v.format(**fill)) for k, v in params]
    c = as_patient(me)
    r = c.get("/fhir/Observation", params=q + [("code:text", "adv7")])
    assert r.status_code in (200, 400), (q, r.status_code, r.text[:500])
    if r.status_code == 200:
        found = ids(r.json())
        assert not (found & world["theirs"]), (q, found & world["theirs"])
        # every Observation in the answer is mine (those of other tests are not in my compartment either)
        for e in r.json().get("entry", []):
            res = e["resource"]
            if res["resourceType"] == "Observation":
                refs = [res.get("subject", {}).get("reference")] + [p.get("reference") for p in res.get("performer", [])]
                assert f"Patient/{me}" in refs, (q, res)


def test_elision_gives_mine_exactly(client, as_patient, world):
    me, other = world["me"], world["other"]
    c = as_patient(me)
    for q in ({"patient": me}, {"patient:Patient": me}, {"subject:Patient": me}, {"patient": f"{me},{other}"}):
        assert ids(search(c, "/fhir/Observation", q)) == world["mine"], q
    assert ids(search(c, "/fhir/Observation", {"patient": other})) == set()
    assert ids(search(c, "/fhir/Observation", {"_id": ",".join(world["theirs"]), "patient": me})) == set()
    assert ids(search(c, "/fhir/Observation", {"patient.name": "Me", "_id": ",".join(world["mine"] | world["theirs"])})) == world["mine"]


def test_summary_count(client, as_patient, world):
    me, other = world["me"], world["other"]
    c = as_patient(me)
    assert search(c, "/fhir/Observation", {"patient": me, "_summary": "count"})["total"] == len(world["mine"])
    assert search(c, "/fhir/Observation", {"patient": other, "_summary": "count"})["total"] == 0
    assert search(c, "/fhir/Observation", {"patient": f"{me},{other}", "_summary": "count"})["total"] == len(world["mine"])
    assert search(c, "/fhir/Observation", {"subject": me, "_summary": "count"})["total"] == len(world["mine"])


def test_include_and_revinclude(client, as_patient, world):
    me, other = world["me"], world["other"]
    c = as_patient(me)
    b = search(c, "/fhir/Observation", [("patient", me), ("_include", "Observation:performer"), ("_include", "Observation:subject"),
                                        ("_revinclude", "DiagnosticReport:result")])
    assert ids(b, "Observation") == world["mine"]
    assert ids(b, "Patient") <= {me}, ids(b, "Patient")
    assert ids(b, "DiagnosticReport") == set(), "the other's report about my Observation must not be included"
    b = search(c, "/fhir/Observation", [("patient", me), ("_include:iterate", "Observation:performer"), ("_include", "*")])
    assert ids(b, "Patient") <= {me}
    b = search(c, "/fhir/Patient", [("_id", f"{me},{other}"), ("_revinclude", "Observation:patient"), ("_revinclude", "Group:member")])
    assert ids(b, "Patient") == {me}
    assert ids(b, "Observation") == world["mine"]
    assert ids(b, "Group") == set()
    b = search(c, "/fhir/Patient", [("_has:Observation:patient:code:text", "adv7")])
    assert ids(b, "Patient") <= {me}
    b = search(c, "/fhir/Group", [("member", other)])
    assert ids(b) == set()


def test_compartment_search_of_the_other(client, as_patient, world):
    me, other = world["me"], world["other"]
    c = as_patient(me)
    for q in ({"patient": me}, {"patient:Patient": me}, {}):
        r = c.get(f"/fhir/Patient/{other}/Observation", params=q)
        assert r.status_code in (200, 403, 404), (q, r.status_code, r.text[:500])
        if r.status_code == 200:
            # only what is in both compartments: my Observation with the other as performer
            assert ids(r.json()) <= world["mine"], (q, ids(r.json()))
            assert not ids(r.json()) & world["theirs"]
    r = c.get(f"/fhir/Patient/{me}/Observation", params={"patient": other})
    assert r.status_code == 200 and ids(r.json()) == set(), r.text[:500]


def test_shape_cache_across_tokens(client, as_patient, world):
    me, other = world["me"], world["other"]
    mine_c, theirs_c = as_patient(me), as_patient(other)
    shared = {world["shared"]}  # subject me, performer the other: in both compartments (R4 Observation: subject, performer)
    for _ in range(3):  # learn the shape, then reuse it across tokens in both orders
        assert ids(search(mine_c, "/fhir/Observation", {"patient": me})) == world["mine"]
        assert ids(search(theirs_c, "/fhir/Observation", {"patient": me})) == shared
        got = ids(search(theirs_c, "/fhir/Observation", {"patient": other}))
        assert got == {world["their_own"]}, got
        assert ids(search(mine_c, "/fhir/Observation", {"patient": other})) == set()
        assert ids(search(mine_c, "/fhir/Observation", {"subject:Patient": other})) == set()
        assert ids(search(theirs_c, "/fhir/Observation", {"subject:Patient": me})) == shared
        assert ids(search(theirs_c, "/fhir/Observation", {"performer:Patient": me})) == set()
        assert ids(search(mine_c, "/fhir/Observation", {"performer:Patient": other})) == shared


def test_paging_next_links(client, as_patient, pair):
    me, other = pair
    mine = {obs(client, ref(f"Patient/{me}")) for _ in range(5)}
    theirs = {obs(client, ref(f"Patient/{other}")) for _ in range(5)}
    c, oc = as_patient(me), as_patient(other)
    seen: set[str] = set()
    b = search(c, "/fhir/Observation", {"patient": me, "_count": "2"})
    nexts = []
    while True:
        seen |= ids(b)
        nxt = [link["url"] for link in b.get("link", []) if link["relation"] == "next"]
        if not nxt:
            break
        nexts.append(nxt[0])
        b = search(c, nxt[0])
    assert seen == mine
    assert nexts, "paging expected with _count=2"
    # another patient replaying my next links sees nothing of mine
    for url in nexts:
        r = oc.get(url)
        assert r.status_code in (200, 400, 403, 404, 410), (url, r.status_code)
        if r.status_code == 200:
            assert not (ids(r.json()) & mine), (url, ids(r.json()))
    # and their own paging of patient=<me> stays empty
    b = search(oc, "/fhir/Observation", {"patient": me, "_count": "1"})
    assert ids(b) == set() and not [link for link in b.get("link", []) if link["relation"] == "next"]
    assert theirs  # fixture sanity


# ---------------------------------------------------------------- acting for someone (guardian)


def test_guardian_acting_for_with_patient_param(client, as_patient):
    child, _ = patient(client, "SE", _years_ago(10))
    parent, number = patient(client, "SE", date(1981, 8, 8), name="Parent")
    related_person(client, child, ["PRN"], identifier=("http://electronichealth.se/identifier/personnummer", number))
    stranger, _ = patient(client, name="Stranger")
    child_obs = obs(client, ref(f"Patient/{child}"))
    parent_obs = obs(client, ref(f"Patient/{parent}"))
    stranger_obs = obs(client, ref(f"Patient/{stranger}"))
    own = as_patient(parent)
    acting = {"X-Acting-For": f"Patient/{child}"}
    got = search(own, "/fhir/Observation", {"patient": child}, headers=acting)
    assert ids(got) == {child_obs}, got
    for q in ({"patient": stranger}, {"patient": f"{child},{stranger}"}, {"patient": parent}, {"subject:Patient": stranger}):
        got = ids(search(own, "/fhir/Observation", q, headers=acting))
        assert stranger_obs not in got, q
        assert got <= {child_obs, parent_obs}, (q, got)
    assert ids(search(own, "/fhir/Observation", {"patient": child})) == set()
    assert ids(search(own, "/fhir/Observation", {"patient": parent})) == {parent_obs}
    # fast read while acting
    r = own.get(f"/fhir/Observation/{stranger_obs}", headers=acting)
    assert r.status_code == 404, (r.status_code, r.text[:300])
    assert own.get(f"/fhir/Observation/{child_obs}", headers=acting).status_code == 200
    # acting for the stranger (no relation): refused
    r = own.get("/fhir/Observation", params={"patient": stranger}, headers={"X-Acting-For": f"Patient/{stranger}"})
    assert r.status_code == 403, (r.status_code, r.text[:300])
    r = own.get(f"/fhir/Observation/{stranger_obs}", headers={"X-Acting-For": f"Patient/{stranger}"})
    assert r.status_code in (403, 404), (r.status_code, r.text[:300])


def test_guardian_token_for_child_after_age_limit(client, as_patient):
    child, _ = patient(client, "SE", _years_ago(13, 1))
    parent, number = patient(client, "SE", date(1981, 8, 8), name="Parent")
    related_person(client, child, ["PRN"], identifier=("http://electronichealth.se/identifier/personnummer", number))
    child_obs = obs(client, ref(f"Patient/{child}"))
    c = as_patient(child, fhir_user=f"Patient/{parent}")
    # a token bound to a 13-year-old's record, held by the parent: no reach without consent
    r = c.get(f"/fhir/Observation/{child_obs}")
    assert r.status_code in (403, 404), (r.status_code, r.text[:300])
    r = c.get("/fhir/Observation", params={"patient": child})
    assert r.status_code == 403 or ids(r.json()) == set(), (r.status_code, r.text[:300])
    consent(client, child, proxy_provision(f"Patient/{parent}"))
    assert c.get(f"/fhir/Observation/{child_obs}").status_code == 200
    assert ids(search(c, "/fhir/Observation", {"patient": child})) == {child_obs}


def _constant_ids_round(client, as_patient, pids, exact: bool):
    code = new_id("adv7")
    own: dict[str, str] = {}
    for pid in pids:
        put(client, {"resourceType": "Patient", "id": pid})
        own[pid] = obs(client, ref(f"Patient/{pid}"), code={"coding": [{"system": "http://adv7.example", "code": code}]})
    stranger = obs(client, ref(f"Patient/{new_id('pat')}"), code={"coding": [{"system": "http://adv7.example", "code": code}]})
    clients = {pid: as_patient(pid) for pid in pids}
    from fhir_server.search import fast

    hits_before = sum(c.shapes.hits for c in fast._caches.values())
    queries = lambda pid: ({"code": f"http://adv7.example|{code}"}, {"code": f"http://adv7.example|{code}", "patient": pid},  # noqa: E731
                           {"code": f"http://adv7.example|{code}", "subject": f"Patient/{pid}"},
                           {"code": f"http://adv7.example|{code}", "patient": "subject"})
    for _ in range(2):
        for pid, c in clients.items():
            for _ in range(4):  # the first token learns each shape and passes its verified hits; the next reuse it
                for q in queries(pid):
                    got = ids(search(c, "/fhir/Observation", q))
                    want = {own[pid]} if q.get("patient", pid) == pid else set()
                    assert got <= want, ("LEAK", pid, q, got, want)
                    assert stranger not in got
                    if exact:
                        assert got == want, (pid, q, got, want)
    assert sum(c.shapes.hits for c in fast._caches.values()) > hits_before, "no learned shape was used"


@pytest.mark.parametrize("pids", [("subject", "performer", "Patient", "Observation"), ("Patient", "subject", "Observation", "performer")])
def test_learned_shapes_never_widen_for_patient_ids_equal_to_shape_constants(client, as_patient, pids):
    """Learned search shapes key on which values coincide with a shape constant (the type, a
    parameter code, `Patient`), not on which constant: Patients whose ids are such words search
    the same shape in turn. None may see anything outside its own compartment."""
    _constant_ids_round(client, as_patient, pids, exact=False)


@pytest.mark.parametrize("pids", [("subject", "performer"), ("Patient", "Observation")])
def test_learned_shapes_exact_for_patient_ids_equal_to_shape_constants(client, as_patient, pids):
    """The same, and each gets exactly its own compartment (R4 search: every match)."""
    _constant_ids_round(client, as_patient, pids, exact=True)


def test_has_and_chains_from_patient(client, as_patient, world):
    me, other = world["me"], world["other"]
    c = as_patient(me)
    their_own = world["their_own"]
    for q in ({"_has:Observation:patient:_id": their_own}, {"_has:Observation:subject:_id": their_own},
              {"_has:Observation:patient:patient": other}, {"_has:Observation:performer:_id": world["shared"], "_id": other},
              {"_id": other, "_revinclude": "Observation:patient"}, {"link": me}, {"link:Patient": me}):
        r = c.get("/fhir/Patient", params=q)
        assert r.status_code in (200, 400, 403), (q, r.status_code, r.text[:300])
        if r.status_code == 200:
            got = ids(r.json())
            assert other not in got and their_own not in got and not got & world["theirs"], (q, got)
    # my own Patient through my Observation: found, and nothing more
    got = ids(search(c, "/fhir/Patient", {"_has:Observation:patient:_id": world["shared"], "_revinclude": "Observation:patient"}))
    assert got == {me} | world["mine"], got
    for q in ({"patient.name": "Other", "patient": me}, {"subject:Patient.name": "Other"}, {"performer:Patient.name": "Other"},
              {"subject:Group.member": other}, {"patient._id": other}):
        r = c.get("/fhir/Observation", params=q)
        assert r.status_code in (200, 400, 403), (q, r.status_code)
        if r.status_code == 200:
            got = ids(r.json())
            assert not got & world["theirs"] and got <= world["mine"], (q, got)


