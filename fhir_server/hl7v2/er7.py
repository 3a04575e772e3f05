"""A tolerant, segment-level ER7 (pipe-and-hat) reader.

hl7apy builds a full object tree per message (~60 ms per sample message here,
with or without group inference), which caps an MLLP listener at a few dozen
messages per second.  Mapping only needs "field n, repetition r, component c,
sub-component s" lookups, so this module splits the text lazily instead and
decodes escape sequences at the leaves.  hl7apy is still used for building
outbound messages (see outbound.py) and is measured against this reader in the
tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class ER7Error(ValueError):
    """The text is not an HL7 v2 message (no MSH, broken encoding characters)."""


@dataclass(frozen=True)
class Encoding:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""  # v2.7+: '#'

    @property
    def msh2(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


DEFAULT_ENCODING = Encoding()


def decode_bytes(raw: str | bytes) -> str:
    """Bytes to text: UTF-8 (BOM tolerated), else Latin-1, never an exception."""
    if isinstance(raw, str):
        return raw.lstrip("\ufeff")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def normalise(text: str) -> str:
    """Segment separators to \\r, BOM and surrounding blank lines removed.

    The segment terminator of HL7 v2 is CR (v2.5 ch. 2.5.1). CRLF is read as CR. A
    lone LF is a segment break only in a message that has no CR at all (files
    edited on Unix); in a message whose segments end with CR, an LF inside a field
    is data and stays in the field, never cutting the segment short."""
    text = text.lstrip("\ufeff")
    if "\r" in text:
        text = text.replace("\r\n", "\r")
    else:
        text = text.replace("\n", "\r")
    segs = [s for s in text.split("\r") if s.strip()]
    return "\r".join(segs)


_ESC_CACHE: dict[Encoding, re.Pattern] = {}


def unescape(text: str, enc: Encoding) -> str:
    """Decode \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\P\\ \\Xhh\\ \\.br\\; drop formatting escapes."""
    e = enc.escape
    if not e or e not in text:
        return text
    pat = _ESC_CACHE.get(enc)
    if pat is None:
        q = re.escape(e)
        pat = _ESC_CACHE[enc] = re.compile(q + "([^" + q + "]*)" + q)

    def sub(m: re.Match) -> str:
        code = m.group(1)
        simple = {"F": enc.field, "S": enc.component, "T": enc.subcomponent, "R": enc.repetition,
                  "E": enc.escape, "P": enc.truncation or "#", ".br": "\n", "H": "", "N": ""}
        if code in simple:
            return simple[code]
        if code[:1] == "X" and len(code) > 1:
            try:
                return bytes.fromhex(code[1:]).decode("utf-8", "replace")
            except ValueError:
                return m.group(0)
        if code[:1] in ("C", "M", "Z") or code.startswith((".sp", ".in", ".ti", ".sk", ".fi", ".nf", ".ce")):
            return ""
        return m.group(0)

    return pat.sub(sub, text)


def escape(text: str, enc: Encoding = DEFAULT_ENCODING) -> str:
    """Escape delimiters so that `text` survives as one leaf value."""
    out = text.replace(enc.escape, f"{enc.escape}E{enc.escape}")
    for ch, code in ((enc.field, "F"), (enc.component, "S"), (enc.subcomponent, "T"), (enc.repetition, "R")):
        out = out.replace(ch, f"{enc.escape}{code}{enc.escape}")
    return out.replace("\r", f"{enc.escape}X0D{enc.escape}").replace("\n", f"{enc.escape}.br{enc.escape}")


class Value:
    """One repetition of a field: components of sub-components, decoded on access."""

    __slots__ = ("raw", "enc", "_comps")

    def __init__(self, raw: str, enc: Encoding):
        self.raw = raw
        self.enc = enc
        self._comps: list[list[str]] | None = None

    def _split(self) -> list[list[str]]:
        if self._comps is None:
            self._comps = [c.split(self.enc.subcomponent) for c in self.raw.split(self.enc.component)]
        return self._comps

    def get(self, comp: int | str = 1, sub: int = 1) -> str:
        """Component `comp` (1-based; "4.2" = component 4 sub-component 2), decoded."""
        if isinstance(comp, str):
            if "." in comp:
                c, s = comp.split(".", 1)
                comp, sub = int(c), int(s)
            else:
                comp = int(comp)
        comps = self._split()
        if comp > len(comps):
            return ""
        subs = comps[comp - 1]
        if sub > len(subs):
            return ""
        v = subs[sub - 1]
        if v == '""':  # HL7 explicit null
            return ""
        return unescape(v, self.enc).strip()

    def component(self, comp: int) -> "Value":
        """Component `comp` as a Value whose parts are its sub-components (for HD inside CX)."""
        comps = self._split()
        raw = self.enc.component.join(comps[comp - 1]) if comp <= len(comps) else ""
        return Value(raw, self.enc)

    @property
    def text(self) -> str:
        return unescape(self.raw, self.enc)

    def __bool__(self) -> bool:
        return bool(self.raw.replace(self.enc.component, "").replace(self.enc.subcomponent, "").strip()) and self.raw != '""'

    def __repr__(self) -> str:  # pragma: no cover
        return f"Value({self.raw!r})"


class Segment:
    """One segment; `fields[n]` is the raw text of SEG-n (MSH is numbered as the standard does)."""

    __slots__ = ("name", "fields", "enc", "index")

    def __init__(self, text: str, enc: Encoding, index: int):
        self.enc = enc
        self.index = index  # 1-based position among segments of the same name
        parts = text.split(enc.field)
        self.name = parts[0].strip().upper()
        if self.name == "MSH":
            # MSH-1 is the field separator itself, MSH-2 the encoding characters.
            self.fields = ["MSH", enc.field] + parts[1:]
        else:
            self.fields = parts

    def raw(self, n: int) -> str:
        return self.fields[n] if n < len(self.fields) else ""

    def reps(self, n: int) -> list[Value]:
        """Non-empty repetitions of field n."""
        raw = self.raw(n)
        if not raw:
            return []
        if self.name == "MSH" and n in (1, 2):
            return [Value(raw, Encoding(field="\x00", component="\x00", repetition="\x00", escape="", subcomponent="\x00"))]
        vals = [Value(r, self.enc) for r in raw.split(self.enc.repetition)]
        return [v for v in vals if v]

    def first(self, n: int) -> Value | None:
        r = self.reps(n)
        return r[0] if r else None

    def get(self, n: int, comp: int | str = 1, sub: int = 1) -> str:
        v = self.first(n)
        return v.get(comp, sub) if v else ""

    def __repr__(self) -> str:  # pragma: no cover
        return f"Segment({self.name})"


@dataclass
class Message:
    text: str
    enc: Encoding
    segments: list[Segment] = field(default_factory=list)

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    def first(self, name: str) -> Segment | None:
        for s in self.segments:
            if s.name == name:
                return s
        return None

    # MSH conveniences -------------------------------------------------------
    @property
    def control_id(self) -> str:
        return self.msh.get(10)

    @property
    def message_code(self) -> str:
        return self.msh.get(9, 1).upper()

    @property
    def trigger(self) -> str:
        return self.msh.get(9, 2).upper()

    @property
    def structure(self) -> str:
        return self.msh.get(9, 3).upper()

    @property
    def version(self) -> str:
        return self.msh.get(12, 1)

    @property
    def message_type(self) -> str:
        """'ADT^A01' style, what hl7_inbound.message_type stores."""
        return f"{self.message_code}^{self.trigger}" if self.trigger else self.message_code

    @property
    def dedup_scope(self) -> str:
        """`MSH-3|MSH-4` as sent (every HD component, trailing empty ones dropped): a control
        id (MSH-10) is unique per sending application and facility (v2.5 ch. 2.14.9.10), so
        idempotency is keyed on (MSH-3, MSH-4, MSH-10) -- never on the peer's address."""
        cs = self.enc.component

        def hd(n: int) -> str:
            return self.msh.raw(n).rstrip(cs)

        return f"{hd(3)}|{hd(4)}"

    @property
    def sender(self) -> str:
        """MSH-3^MSH-4 (namespace id, else universal id): the duplicate-detection scope."""
        def hd(n: int) -> str:
            v = self.msh.first(n)
            return (v.get(1) or v.get(2)) if v else ""
        return f"{hd(3)}^{hd(4)}"


def parse(raw: str | bytes) -> Message:
    """Parse ER7 text; raise ER7Error when it is not recognisably HL7 v2."""
    text = normalise(decode_bytes(raw))
    start = text.find("MSH")
    if start < 0:
        raise ER7Error("No MSH segment")
    if start > 0:
        # Tolerate junk before MSH only if it is on its own line(s).
        if text[start - 1] != "\r":
            raise ER7Error("Text before MSH segment")
        text = text[start:]
    if len(text) < 8:
        raise ER7Error("MSH segment too short")
    fs = text[3]
    if fs.isalnum() or fs in "\r ":
        raise ER7Error("Invalid field separator in MSH-1")
    msh2 = text[4:].split(fs, 1)[0]
    if len(msh2) < 4 or len(set(msh2[:4])) != 4 or fs in msh2:
        raise ER7Error("Invalid encoding characters in MSH-2")
    enc = Encoding(fs, msh2[0], msh2[1], msh2[2], msh2[3], msh2[4] if len(msh2) > 4 else "")
    msg = Message(text=text, enc=enc)
    counts: dict[str, int] = {}
    for seg_text in text.split("\r"):
        name = seg_text[:3].upper()
        if not re.fullmatch(r"[A-Z][A-Z0-9]{2}", name):
            raise ER7Error(f"Invalid segment name {seg_text[:3]!r} in segment {len(msg.segments) + 1}")
        if len(seg_text) > 3 and seg_text[3] != fs and seg_text[3:].strip():
            # "APT 4^^..." is not a segment: a field cut at a stray line break. Refuse the
            # message rather than drop that text silently and answer AA.
            raise ER7Error(f"Segment {len(msg.segments) + 1} ({seg_text[:20]!r}) does not start with a segment "
                           f"name and the field separator '{fs}'; the message is cut or malformed")
        counts[name] = counts.get(name, 0) + 1
        msg.segments.append(Segment(seg_text, enc, counts[name]))
    if not msg.control_id:
        raise ER7Error("MSH-10 (message control id) is empty")
    if not msg.message_code:
        raise ER7Error("MSH-9 (message type) is empty")
    return msg


def peek_header(raw: str | bytes) -> dict[str, str]:
    """Best-effort MSH fields from a fragment (e.g. an oversized message's first bytes)."""
    text = decode_bytes(raw[:4096] if isinstance(raw, (bytes, str)) else raw)
    text = text.replace("\n", "\r")
    i = text.find("MSH")
    if i < 0 or len(text) < i + 8:
        return {}
    line = text[i:].split("\r", 1)[0]
    fs = line[3]
    parts = ["MSH", fs] + line[4:].split(fs)
    comp = parts[2][0] if len(parts) > 2 and parts[2] else "^"

    def f(n: int) -> str:
        return parts[n] if n < len(parts) else ""

    return {"MSH-3": f(3), "MSH-4": f(4), "MSH-5": f(5), "MSH-6": f(6), "MSH-9": f(9),
            "MSH-10": f(10).split(comp)[0], "MSH-11": f(11), "MSH-12": f(12),
            "MSH-15": f(15), "MSH-16": f(16), "MSH-2": f(2), "MSH-1": fs}
