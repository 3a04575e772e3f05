"""Fonts for the payment guarantee PDF: names in any European script, legible.

reportlab's built-in Helvetica covers WinAnsi (cp1252) only: Danish æøå pass, but a
Polish or Czech name ("Łukasz Wójcik-Łęcka") would print missing-glyph boxes. When a
TrueType DejaVu Sans is installed (Debian/Ubuntu `fonts-dejavu-core`, in the Docker
image; Fedora `dejavu-sans-fonts`) it is embedded and every character prints as is.
Without it the text falls back to Helvetica with each character outside cp1252 spelt
without its accents ("Lukasz Wójcik-Lecka"), never a box.

`fonts()` -> (regular, bold, oblique) font names for `canvas.setFont`;
`printable(text)` -> the text as those fonts can print it.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from pathlib import Path

# (regular, bold, oblique) file names, looked for in these directories, first found wins
DEJAVU = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf")
FONT_DIRS = [
    Path("/usr/share/fonts/truetype/dejavu"),  # Debian, Ubuntu
    Path("/usr/share/fonts/dejavu-sans-fonts"),  # Fedora
    Path("/usr/share/fonts/dejavu"),  # Alpine, Arch
    Path("/usr/share/fonts/TTF"),  # Arch
]
BUILTIN = ("Helvetica", "Helvetica-Bold", "Helvetica-Oblique")
_REGISTERED = ("GuaranteeSans", "GuaranteeSans-Bold", "GuaranteeSans-Oblique")
# letters NFKD does not take apart
_PLAIN = str.maketrans({"Ł": "L", "ł": "l", "Đ": "D", "đ": "d", "Ħ": "H", "ħ": "h", "ı": "i", "Ŧ": "T", "ŧ": "t"})


@lru_cache(maxsize=1)
def fonts() -> tuple[str, str, str]:
    """Register DejaVu Sans if installed; the font names to use."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    for folder in FONT_DIRS:
        paths = [folder / name for name in DEJAVU]
        if all(p.is_file() for p in paths):
            try:
                for name, path in zip(_REGISTERED, paths):
                    pdfmetrics.registerFont(TTFont(name, str(path)))
            except Exception:  # an unreadable font file: use the built-in one
                continue
            return _REGISTERED
    return BUILTIN


def printable(text: str) -> str:
    """`text` as the chosen fonts print it: unchanged with DejaVu; else cp1252 kept and
    other letters without their accents ('?' for what has no Latin spelling)."""
    if fonts() != BUILTIN:
        return text
    out = []
    for ch in text:
        try:
            ch.encode("cp1252")
            out.append(ch)
            continue
        except UnicodeEncodeError:
            pass
        plain = "".join(c for c in unicodedata.normalize("NFKD", ch.translate(_PLAIN)) if not unicodedata.combining(c))
        try:
            out.append(plain.encode("cp1252").decode("cp1252") if plain else "?")
        except UnicodeEncodeError:
            out.append("?")
    return "".join(out)
