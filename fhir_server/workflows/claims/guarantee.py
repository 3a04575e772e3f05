"""The payment guarantee (betalingsgaranti): a PDF issued when a
pre-authorisation is approved, kept in the case as a Binary (in the blob
store) with a DocumentReference, downloadable as application/pdf.

Rendered with reportlab: insurer, patient, approved treatments, validity and
the pre-authorisation reference (ClaimResponse.preAuthRef) the clinic quotes.
"""

from __future__ import annotations

import io
import uuid

from ...documents.binary_content import content_extension, store_in_transaction
from ...documents.ingest import new_key
from . import records
from .responses import approved_count, now_instant

DOCUMENT_TYPE = {"system": "http://fhir-server.local/CodeSystem/document-type", "code": "payment-guarantee", "display": "Payment guarantee"}

_LABELS = {
    "da": {
        "title": "Betalingsgaranti", "insurer": "Forsikring", "patient": "Patient", "ref": "Garantinummer (preAuthRef)",
        "valid": "Gyldig", "to": "til", "treatments": "Godkendte behandlinger", "count": "behandlinger",
        "note": "Forsikringen betaler for de godkendte behandlinger i perioden. Oplys garantinummeret til behandleren.",
    },
    "en": {
        "title": "Payment guarantee", "insurer": "Insurer", "patient": "Patient", "ref": "Guarantee number (preAuthRef)",
        "valid": "Valid", "to": "to", "treatments": "Approved treatments", "count": "treatments",
        "note": "The insurer pays for the approved treatments within the period. Quote the guarantee number to the clinic.",
    },
}


def _name(resource: dict | None, fallback: str) -> str:
    if not resource:
        return fallback
    if isinstance(resource.get("name"), str):
        return resource["name"]
    for n in resource.get("name") or []:
        if isinstance(n, dict):
            if n.get("text"):
                return n["text"]
            parts = [*(n.get("given") or []), n.get("family") or ""]
            text = " ".join(p for p in parts if p)
            if text:
                return text
    return fallback


def treatment_lines(claim: dict, response: dict, policy) -> list[tuple[str, int]]:
    """(treatment name, approved count) per approved item of the response."""
    by_seq = {int(i.get("sequence") or n): i for n, i in enumerate(claim.get("item") or [], start=1)}
    out = []
    for item in response.get("item") or []:
        count = approved_count(item)
        if count <= 0:
            continue
        claim_item = by_seq.get(int(item.get("itemSequence") or 0)) or {}
        codings = (claim_item.get("productOrService") or {}).get("coding") or [{}]
        coding = next((c for c in codings if policy.covers(c)), codings[0])
        out.append((policy.display(coding), count))
    return out


def render_pdf(lang: str, insurer: str, patient: str, pre_auth_ref: str, period: dict, lines: list[tuple[str, int]]) -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    from .pdf_fonts import fonts, printable

    regular, bold, oblique = fonts()
    t = {k: printable(v) for k, v in _LABELS.get(lang, _LABELS["en"]).items()}
    insurer, patient, pre_auth_ref = printable(insurer), printable(patient), printable(pre_auth_ref)
    lines = [(printable(name), count) for name, count in lines]
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4, invariant=0)
    c.setTitle(f"{t['title']} {pre_auth_ref}")
    c.setAuthor(insurer)
    width, height = A4
    y = height - 72
    c.setFont(bold, 20)
    c.drawString(72, y, t["title"])
    y -= 40
    c.setFont(regular, 12)
    for label, value in (
        (t["insurer"], insurer),
        (t["patient"], patient),
        (t["ref"], pre_auth_ref),
        (t["valid"], f"{period.get('start', '')} {t['to']} {period.get('end', '')}"),
    ):
        c.drawString(72, y, f"{label}: {value}")
        y -= 20
    y -= 10
    c.setFont(bold, 12)
    c.drawString(72, y, f"{t['treatments']}:")
    c.setFont(regular, 12)
    for name, count in lines:
        y -= 20
        if y < 72:  # a long list goes on over the next page
            c.showPage()
            c.setFont(regular, 12)
            y = height - 72
        c.drawString(90, y, f"{name}: {count} {t['count']}")
    y -= 40
    c.setFont(oblique, 10)
    c.drawString(72, y, t["note"])
    c.showPage()
    c.save()
    return buf.getvalue()


def issue_guarantee(conn, wctx, claim: dict, response: dict, policy, case_ref: str) -> dict:
    """Render, store (Binary + DocumentReference in the case); returns the DocumentReference."""
    patient = records.read(conn, records.ref_of(claim.get("patient")))
    insurer_ref = response.get("insurer") or {}
    insurer = records.read(conn, records.ref_of(insurer_ref))
    lines = treatment_lines(claim, response, policy)
    pdf = render_pdf(
        policy.guarantee_language,
        _name(insurer, insurer_ref.get("display") or records.ref_of(insurer_ref) or "?"),
        _name(patient, (claim.get("patient") or {}).get("display") or records.ref_of(claim.get("patient")) or "?"),
        response.get("preAuthRef", ""),
        response.get("preAuthPeriod") or {},
        lines,
    )
    binary_id, doc_id = str(uuid.uuid4()), str(uuid.uuid4())
    info = store_in_transaction(conn, "application/pdf", new_key(binary_id), pdf)
    records.create(conn, wctx, {
        "resourceType": "Binary",
        "meta": {"tag": [records.WORKFLOW_TAG]},
        "contentType": "application/pdf",
        "securityContext": {"reference": f"DocumentReference/{doc_id}"},
        "_data": {"extension": [content_extension(info)]},
    }, res_id=binary_id)
    related = [{"reference": case_ref}]
    if f"Claim/{claim['id']}" != case_ref:
        related.append({"reference": f"Claim/{claim['id']}"})
    related.append({"reference": f"ClaimResponse/{response['id']}"})
    doc = {
        "resourceType": "DocumentReference",
        "meta": {"tag": [records.WORKFLOW_TAG]},
        "status": "current",
        "type": {"coding": [DOCUMENT_TYPE], "text": _LABELS.get(policy.guarantee_language, _LABELS["en"])["title"]},
        "subject": claim.get("patient"),
        "date": now_instant(),
        "description": f"{_LABELS.get(policy.guarantee_language, _LABELS['en'])['title']} {response.get('preAuthRef', '')}",
        "content": [{"attachment": {
            "contentType": "application/pdf",
            "url": f"Binary/{binary_id}",
            "title": f"payment-guarantee-{response.get('preAuthRef', 'x')}.pdf",
            "creation": now_instant(),
        }}],
        "context": {"related": related, "period": response.get("preAuthPeriod")},
    }
    if records.split_ref(records.ref_of(insurer_ref)):
        doc["author"] = [insurer_ref]
    if not doc["context"]["period"]:
        del doc["context"]["period"]
    return records.create(conn, wctx, doc, res_id=doc_id)
