"""The payment guarantee PDF as a reader sees it (pdftotext): names in any European
script print as written (DejaVu Sans embedded when installed) or, without that font,
spelt without accents; never missing-glyph boxes. A long list of treatments goes on
over the next page."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from fhir_server.workflows.claims import pdf_fonts
from fhir_server.workflows.claims.guarantee import render_pdf

pytestmark = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext (poppler-utils) is not installed")

PERIOD = {"start": "2026-03-01", "end": "2026-05-30"}


def _text(pdf: bytes, tmp_path) -> str:
    path = tmp_path / "g.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, check=True, text=True).stdout


@pytest.fixture
def no_dejavu(monkeypatch):
    pdf_fonts.fonts.cache_clear()
    monkeypatch.setattr(pdf_fonts, "FONT_DIRS", [])
    yield
    pdf_fonts.fonts.cache_clear()


def test_names_in_any_european_script_print_as_written(tmp_path):
    pdf_fonts.fonts.cache_clear()
    if pdf_fonts.fonts() == pdf_fonts.BUILTIN:
        pytest.skip("DejaVu Sans is not installed here (fonts-dejavu-core); the fallback is tested below")
    text = _text(render_pdf("da", "Zdrowie Ubezpieczenia Sp. z o.o.", "Łukasz Wójcik-Łęcka", "PA-1", PERIOD,
                            [("Fizjoterapia ąę", 3)]), tmp_path)
    for expected in ("Betalingsgaranti", "Łukasz Wójcik-Łęcka", "Fizjoterapia ąę: 3 behandlinger", "Garantinummer", "PA-1",
                     "2026-03-01 til 2026-05-30", "Forsikringen betaler"):
        assert expected in text, (expected, text)
    assert "■" not in text


def test_without_dejavu_other_letters_lose_their_accents_not_their_place(tmp_path, no_dejavu):
    assert pdf_fonts.fonts() == pdf_fonts.BUILTIN
    text = _text(render_pdf("da", "Dansk Sundhed", "Łukasz Wójcik-Łęcka Søren Ærø", "PA-2", PERIOD, [("Fysioterapi", 3)]), tmp_path)
    assert "Lukasz Wójcik-Lecka Søren Ærø" in text, text
    assert "■" not in text


def test_a_long_list_of_treatments_goes_on_over_the_next_page(tmp_path):
    lines = [(f"Behandling {n:02d}", 3) for n in range(1, 61)]
    pdf = render_pdf("en", "Insurer", "Patient", "PA-3", PERIOD, lines)
    text = _text(pdf, tmp_path)
    assert all(f"Behandling {n:02d}: 3 treatments" in text for n in range(1, 61))
    assert text.count("\f") >= 2  # pages
