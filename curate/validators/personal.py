"""Personal data in text: emails, phone numbers, payment cards, IBANs, IP addresses and US
social security numbers — each a candidate pattern and then a check that only such a thing
passes (phonenumbers' validity per numbering plan, Luhn with issuer prefixes and lengths,
mod 97 with each country's IBAN length, the ipaddress module, the SSA's SSN rules).

`find(text)` gives `(kind, start, end)` spans; `PREFILTER` is an RE2 pattern that matches
every text one of them can be found in (the batch path scans only those in Python).
The patterns are written here: no maintained library finds these kinds at this speed
(Presidio's recognizers are these same regexes and checks one text at a time, at 600
rows/s); phone numbers are validated by `phonenumbers`, Google's libphonenumber.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

Span = tuple[str, int, int]

EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
    r"(?:[A-Za-z]{2,24}|xn--[A-Za-z0-9-]{2,59})(?![\w-])"
)
# 12-19 digits, single spaces or dashes between groups; not part of a longer number
CARD = re.compile(r"(?<![\w.,-])\d(?:[ -]?\d){11,18}(?![\w]|[.,]\d|-\d)")
IBAN = re.compile(r"(?i)(?<![\w-])[a-z]{2}\d{2}(?:[ -]?[a-z0-9]){11,34}")
PHONE = re.compile(
    r"(?<![\w+.])(?:\+\s?\d{1,3}[\s.-]?|\b|(?=\())(?:\(\d{1,5}\)[\s.-]?)?\d(?:[\s.-]?\d){5,14}"
    r"(?:\s?(?:x|ext\.?|extension)\s?\d{1,6})?(?![\w]|[.,]\d)"
)
SSN = re.compile(r"(?<![\w.-])(\d{3})([- .])(\d{2})\2(\d{4})(?![\w]|[.-]\d)")
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,3})?(?![\w]|\.\d)")
IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4}|)(?::[0-9A-Fa-f]{0,4}){2,7}"
    r"(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?:%[A-Za-z0-9]+)?(?:/\d{1,4})?(?![\w:-])"
)
ID_WORD = re.compile(
    r"(?i)(?:#|\b(?:id|no|order|invoice|ref|reference|tracking|ticket|transaction|txn|sku|"
    r"isbn|serial|item|booking|confirmation)\b)\W{0,3}$"
)
PHONE_WORD = re.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|cell|call|fax|whatsapp|number|contact)\b"
)
_DIGIT = re.compile(r"\d")
SLICE = re.compile(r"\d{0,4}:\d{0,4}(?::\d{0,4})?")
DECIMAL = re.compile(r"-?\d{1,4}\.\d{4,}")  # 37.3362725: a coordinate, a measure
DATE = re.compile(r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}")
VERSION_WORD = re.compile(r"(?i)(?:\bv|\bversion\s?|\bver\.?\s?|\brelease\s?|\bbuild\s?)$")

# issuers' prefixes (IIN ranges) and the card lengths each issues
_ISSUERS: list[tuple[tuple[int, int], tuple[int, ...]]] = [
    ((4, 4), (13, 16, 19)),  # Visa
    ((51, 55), (16,)),  # Mastercard
    ((2221, 2720), (16,)),  # Mastercard 2-series
    ((34, 34), (15,)),  # American Express
    ((37, 37), (15,)),
    ((300, 305), (14, 16, 17, 18, 19)),  # Diners Club
    ((36, 36), (14, 16, 17, 18, 19)),
    ((38, 39), (14, 16, 17, 18, 19)),
    ((6011, 6011), (16, 17, 18, 19)),  # Discover
    ((644, 649), (16, 17, 18, 19)),
    ((65, 65), (16, 17, 18, 19)),
    ((3528, 3589), (16, 17, 18, 19)),  # JCB
    ((62, 62), (16, 17, 18, 19)),  # UnionPay
    ((2200, 2204), (16, 17, 18, 19)),  # Mir
    ((5018, 5018), tuple(range(12, 20))),  # Maestro
    ((5019, 5019), (16,)),  # Dankort
    ((5020, 5020), tuple(range(12, 20))),
    ((5038, 5038), tuple(range(12, 20))),
    ((5893, 5893), tuple(range(12, 20))),
    ((6304, 6304), tuple(range(12, 20))),
    ((6759, 6759), tuple(range(12, 20))),
    ((6761, 6763), tuple(range(12, 20))),
    ((56, 58), tuple(range(12, 20))),
    ((60, 60), (16,)),  # RuPay
    ((81, 82), (16,)),
    ((1, 1), (15,)),  # UATP
]

# IBAN length per country (the SWIFT registry)
IBAN_LENGTH = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip

PREFILTER = "|".join(
    [
        r"@[A-Za-z0-9-]+\.",
        r"\d(?:[\s.-]?\d){8}",  # nine digits or more: cards, SSNs, IBANs, unmarked phones
        r"\(\d{1,5}\)[\s.-]?\d",  # a phone number's area in brackets
        r"\+\s?\d{1,3}(?:[\s.()-]{0,2}\d){6}",  # an international number
        r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d",
        r"::|(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]",
        r"\b(?:" + "|".join(IBAN_LENGTH) + r")\d{2}[ -]?[A-Z0-9]{4}[ -]?[A-Z0-9]{4}",
        r"(?i)\b(?:" + "|".join(IBAN_LENGTH) + r")\d{2}[ -]?[a-z0-9]{4}[ -]?[a-z0-9]{4}",
    ]
)

# a cheap first pass: every text PREFILTER matches matches this (seven digits or so with
# separators, an `@`, an IPv6 colon run); PREFILTER then runs over those only
STAGE = r"@|::|:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:|\d[\d\s().+/-]{5,}\d"

# numbering plans tried for a number written without its country code, in this order
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR", "JP", "CN", "AU", "IT", "ES")
_OPERATORS = set("=+-*/×÷<>^%")


def is_luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def is_card(digits: str) -> bool:
    """A number an issuer gives out: a known prefix, a length it issues, Luhn."""
    n = len(digits)
    for (low, high), lengths in _ISSUERS:
        width = len(str(low))
        if n in lengths and low <= int(digits[:width]) <= high:
            return is_luhn(digits)
    return False


def is_iban(text: str) -> bool:
    s = re.sub(r"[ -]", "", text).upper()
    if IBAN_LENGTH.get(s[:2]) != len(s) or not s[2:4].isdigit():
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _in_arithmetic(text: str, start: int, end: int) -> bool:
    """`1000-200-400 = 400`: numbers inside a calculation, not a phone, card or address."""
    after = text[end : end + 4].lstrip()
    before = text[max(0, start - 4) : start].rstrip()
    return bool(after and after[0] in _OPERATORS) or bool(before and before[-1] in _OPERATORS)


def _cards(text: str) -> Iterator[Span]:
    for m in CARD.finditer(text):
        digits = m.group(0).replace(" ", "").replace("-", "")
        if not is_card(digits) or _in_arithmetic(text, m.start(), m.end()):
            continue
        if ID_WORD.search(text[max(0, m.start() - 24) : m.start()]):
            continue  # `order #4835…`: a number that names a thing, Luhn-valid by chance
        yield "credit_card", m.start(), m.end()


def _ibans(text: str) -> Iterator[Span]:
    """The country's length of characters after the code, whatever follows: a word the
    candidate pattern glued on (`DE89…3000 OK`) is left out, not a reason to miss it."""
    for m in IBAN.finditer(text):
        length = IBAN_LENGTH.get(m.group(0)[:2].upper())
        if length is None:
            continue
        taken = 0
        for end in range(m.start(), m.end()):
            taken += text[end] not in " -"
            if taken == length:
                if is_iban(text[m.start() : end + 1]):
                    yield "iban", m.start(), end + 1
                break


def _phones(text: str) -> Iterator[Span]:
    import phonenumbers

    for m in PHONE.finditer(text):
        found = m.group(0)
        digits = sum(map(str.isdigit, found))
        marked = any(c in found for c in "+(")
        if digits < 7 or not marked and digits < 9 or _in_arithmetic(text, *m.span()):
            continue
        if (
            DECIMAL.fullmatch(found.strip())
            or DATE.fullmatch(found.strip())
            or VERSION_WORD.search(text[max(0, m.start() - 9) : m.start()])
        ):
            continue  # a date, or `version 10.0.19041.1`
        bare = not marked and not re.search(r"\d[\s.-]\d", found)
        if bare and not PHONE_WORD.search(text[max(0, m.start() - 40) : m.start()]):
            continue  # bare digits (an epoch, an id) are a phone number only where one is named
        regions = (None,) if found.lstrip().startswith("+") else PHONE_REGIONS
        for region in regions:
            try:
                number = phonenumbers.parse(found, region)
            except phonenumbers.NumberParseException:
                continue
            # valid in its numbering plan; or, written as a phone number is (`+`, brackets),
            # of a possible length: `+1 (555) 123-4567` is fictional, still a phone number
            if phonenumbers.is_valid_number(number) or (
                marked and phonenumbers.is_possible_number(number)
            ):
                yield "phone", m.start(), m.end()
                break


def _ssns(text: str) -> Iterator[Span]:
    for m in SSN.finditer(text):
        if _valid_ssn(m.group(1), m.group(3), m.group(4)):
            yield "ssn", m.start(), m.end()


def _valid_ssn(area: str, group: str, serial: str) -> bool:
    """The SSA's rules: no area 000, 666 or 900-999, no group 00, no serial 0000; and not
    the numbers printed in advertisements (078-05-1120, 219-09-9999)."""
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return f"{area}{group}{serial}" not in ("078051120", "219099999", "123456789")


def _ips(text: str) -> Iterator[Span]:
    for m in IPV4.finditer(text):
        address = m.group(0).split("/")[0]
        if VERSION_WORD.search(text[max(0, m.start() - 9) : m.start()]):
            continue
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            continue
        if not _in_arithmetic(text, *m.span()):
            yield "ip_address", m.start(), m.end()
    if "::" not in text and text.count(":") < 7:
        return
    for m in IPV6.finditer(text):
        address = m.group(0).split("/")[0].split("%")[0]
        if text[m.start() - 1 : m.start()] == "[" and SLICE.fullmatch(address):
            continue  # a slice, `l[::-1]`, `s[1::2]`, not `[2001:db8::1]`
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            continue
        yield "ip_address", m.start(), m.end()


def find(text: str) -> Iterator[Span]:
    """Every personal datum in `text`, as (kind, start, end); spans may overlap (the
    caller keeps one of each overlapping set)."""
    if "@" in text:
        for m in EMAIL.finditer(text):
            yield "email", m.start(), m.end()
    if not _DIGIT.search(text):
        return
    yield from _cards(text)
    yield from _ibans(text)
    yield from _ssns(text)
    yield from _ips(text)
    yield from _phones(text)
