"""Find and redact personal data: e-mail, phone, IBAN, card, T.C. Kimlik No and IP addresses.

Checksummed identifiers are only hits when their checksum holds: IBANs by ISO 7064 mod 97,
card numbers by Luhn, T.C. Kimlik numbers by their two check digits. Libraries such as
presidio need spaCy models and have no Turkish ID or Turkish phone recognizers, so the
patterns live here, with their validators next to them.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

PII_TYPES = ("EMAIL", "IBAN", "CARD", "TCKN", "PHONE", "IP")  # also the priority order for overlaps


@dataclass
class PiiMatch:
    """One piece of personal data in a text: its type and where it is."""

    type: str
    start: int
    end: int
    text: str


EMAIL_RE = re.compile(r"(?<![\w.+-])[\w.+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}(?![\w-])")
# Country code, check digits, then 11-30 alphanumerics with optional single spaces every few chars.
IBAN_RE = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}(?![a-z0-9])")
CARD_RE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")
TCKN_RE = re.compile(r"(?<!\d)[1-9]\d{10}(?!\d)")
_SEP = r"[ .-]?"
PHONE_TR_RE = re.compile(
    r"(?<![\w+])(?:\+90|0090|0)[ ]?\(?[2-5]\d{2}\)?" + _SEP + r"\d{3}" + _SEP + r"\d{2}" + _SEP + r"\d{2}(?!\d)"
)
PHONE_INTL_RE = re.compile(r"(?<![\w+])\+[1-9]\d{0,2}(?:[ .-]?\(?\d{1,5}\)?){2,6}(?!\d)")
IPV4_RE = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]*\d)")
IPV6_RE = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")

# IBAN lengths per country (ISO 13616 registry, the countries most likely in Turkish/European data).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "CH": 21,
    "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GE": 22,
    "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MT": 31,
    "NL": 18, "NO": 15, "PL": 28, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29, "XK": 20,
}


def iban_valid(iban: str) -> bool:
    """ISO 7064 mod-97 check of an IBAN (spaces ignored); the country's length must match."""
    compact = iban.replace(" ", "").upper()
    expected = IBAN_LENGTHS.get(compact[:2])
    if expected is not None and len(compact) != expected:
        return False
    if not 15 <= len(compact) <= 34 or not compact[2:4].isdigit() or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def luhn_valid(number: str) -> bool:
    """Luhn check of a card number (spaces and dashes ignored)."""
    digits = [int(ch) for ch in number if ch.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def tckn_valid(number: str) -> bool:
    """T.C. Kimlik No check: 11 digits, no leading zero, and its two check digits."""
    if len(number) != 11 or not number.isdigit() or number[0] == "0":
        return False
    d = [int(ch) for ch in number]
    tenth = ((d[0] + d[2] + d[4] + d[6] + d[8]) * 7 - (d[1] + d[3] + d[5] + d[7])) % 10
    return d[9] == tenth and d[10] == sum(d[:10]) % 10


def _iban_spans(text: str) -> Iterable[tuple[int, int]]:
    for m in IBAN_RE.finditer(text):
        country = m.group()[:2]
        expected = IBAN_LENGTHS.get(country)
        # The pattern can run on into a following upper-case word; cut at the country's length.
        end, seen = m.start(), 0
        for pos in range(m.start(), m.end()):
            if text[pos] != " ":
                seen += 1
            if expected is not None and seen == expected:
                end = pos + 1
                break
        else:
            end = m.end()
        if iban_valid(text[m.start():end]):
            yield m.start(), end


def _phone_digits_ok(candidate: str) -> bool:
    return 8 <= sum(ch.isdigit() for ch in candidate) <= 15


def _phone_spans(text: str) -> Iterable[tuple[int, int]]:
    for m in PHONE_TR_RE.finditer(text):
        yield m.start(), m.end()
    for m in PHONE_INTL_RE.finditer(text):
        candidate = m.group().rstrip(" .-")
        if _phone_digits_ok(candidate):
            yield m.start(), m.start() + len(candidate)


def _ip_spans(text: str) -> Iterable[tuple[int, int]]:
    for regex in (IPV4_RE, IPV6_RE):
        for m in regex.finditer(text):
            candidate = m.group()
            # "::2" (a Python slice) parses as IPv6; real addresses in text have two or more groups.
            if ":" in candidate and sum(1 for group in candidate.split(":") if group) < 2:
                continue
            try:
                ipaddress.ip_address(candidate)
            except ValueError:
                continue
            yield m.start(), m.end()


def _regex_spans(regex: re.Pattern[str], valid: Callable[[str], bool] | None = None) -> Callable:
    def spans(text: str) -> Iterable[tuple[int, int]]:
        for m in regex.finditer(text):
            if valid is None or valid(m.group()):
                yield m.start(), m.end()

    return spans


_DETECTORS: dict[str, Callable[[str], Iterable[tuple[int, int]]]] = {
    "EMAIL": _regex_spans(EMAIL_RE),
    "IBAN": _iban_spans,
    "CARD": _regex_spans(CARD_RE, luhn_valid),
    "TCKN": _regex_spans(TCKN_RE, tckn_valid),
    "PHONE": _phone_spans,
    "IP": _ip_spans,
}
_DIGIT_RE = re.compile(r"\d")  # the detectors' own \d: Unicode decimal digits
# Every byte but ASCII digits, "@", ":" and the UTF-8 lead bytes of U+0660 and above (where the
# first non-ASCII \d digit is): deleting them from a text's UTF-8 leaves nothing when no detector can fire.
# bytes.translate runs in C, an order of magnitude faster than the regex [\d@:] (docs/data.md, step 5).
_NO_HINT_BYTES = bytes(b for b in range(256) if not (chr(b) in "0123456789@:" or b >= 0xD9))


def _detectors_to_run(text: str, wanted: tuple[str, ...]) -> list[str]:
    """The wanted detectors that could match at all: cheap guards (C-speed byte and substring tests)."""
    if not text.encode("utf-8", "surrogatepass").translate(None, _NO_HINT_BYTES):
        return []  # nothing but e-mail and IPv6 can exist without digits, and they need @ or :
    has_digit = _DIGIT_RE.search(text) is not None
    has_at, has_colon = "@" in text, ":" in text
    could = {"EMAIL": has_at, "IBAN": has_digit, "CARD": has_digit, "TCKN": has_digit, "PHONE": has_digit,
             "IP": has_colon or (has_digit and "." in text)}  # IPv4 needs digits and dots, IPv6 colons
    return [kind for kind in wanted if could[kind]]


def _check_types(types: Iterable[str] | None) -> tuple[str, ...]:
    if types is None:
        return PII_TYPES
    return _checked(tuple(types))


@lru_cache(maxsize=64)
def _checked(types: tuple[str, ...]) -> tuple[str, ...]:
    wanted = {t.upper() for t in types}
    unknown = sorted(wanted - set(PII_TYPES))
    if unknown:
        raise ValueError(f"unknown PII type(s) {unknown}; choose from {list(PII_TYPES)}")
    return tuple(t for t in PII_TYPES if t in wanted)


def find_pii(text: str, types: Iterable[str] | None = None) -> list[PiiMatch]:
    """Every piece of personal data in ``text``, by position; overlaps go to the more specific type."""
    kinds = _detectors_to_run(text, _check_types(types))
    if not kinds:
        return []
    taken: list[tuple[int, int]] = []
    found: list[PiiMatch] = []
    for kind in kinds:
        for start, end in _DETECTORS[kind](text):
            if any(start < t_end and t_start < end for t_start, t_end in taken):
                continue
            taken.append((start, end))
            found.append(PiiMatch(kind, start, end, text[start:end]))
    found.sort(key=lambda m: m.start)
    return found


def redact_pii(text: str, types: Iterable[str] | None = None) -> tuple[str, Counter]:
    """Replace personal data with typed placeholders (``<EMAIL>``, ``<PHONE>``...); count them by type."""
    counts: Counter = Counter()
    return redact_pii_into(text, types, counts), counts


def redact_pii_into(text: str, types: Iterable[str] | None, counts: Counter) -> str:
    """:func:`redact_pii` adding the placeholder counts to ``counts`` (no Counter built per text)."""
    matches = find_pii(text, types)
    if not matches:
        return text
    pieces: list[str] = []
    pos = 0
    for match in matches:
        pieces.append(text[pos:match.start])
        pieces.append(f"<{match.type}>")
        counts[match.type] += 1
        pos = match.end
    pieces.append(text[pos:])
    return "".join(pieces)
