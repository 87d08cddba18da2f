"""Secrets in text: private keys, JSON web tokens, credentials assigned to a password or
secret name, and ~220 vendors' tokens — the last from gitleaks' maintained rule set
(`gitleaks.toml` beside this file, read as it is: each rule's regex, keywords, entropy,
secret group and allowlists, with gitleaks' semantics).

Written here, because no rule set covers them as a training-data scrubber needs:
- private key blocks (PEM, OpenSSH, PGP) with or without their END line (a key cut off by a
  truncated row is still a key);
- JWTs, signed or not (`alg: none`, no signature), checked by decoding their header;
- AWS secret access keys (40 characters after an AWS secret name: gitleaks has no rule);
- a value assigned to a password / secret / token / API-key name (`password = "hunter2!"`),
  detect-secrets' keyword plugin's idea, when the value is not a placeholder or a variable;
- quoted base64-alphabet strings of high entropy (detect-secrets' default limit, 4.5 bits).

All regexes run on RE2 (`google-re2`: the engine gitleaks' Go regexes are written for, and
linear in the text, so no row can make the scan backtrack for hours).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
import tomllib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import re2

Span = tuple[str, int, int]
RULES_FILE = Path(__file__).with_name("gitleaks.toml")

PRIVATE_KEY = re2.compile(r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----")
KEY_END = re2.compile(r"-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----")
KEY_BODY = re2.compile(r"(?:[ \t]*(?:[A-Za-z0-9+/=]{2,}|[\w-]+: [^\n]*)?[ \t]*(?:\r?\n|$))*")
JWT = re2.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.(?:[A-Za-z0-9_-]{4,}\.?[A-Za-z0-9_-]*)?")
AWS_SECRET = re2.compile(
    r"(?i)aws.{0,20}?(?:secret|private|sec).{0,20}?[\s'\"`:=]{1,6}([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"
)
ASSIGNED = re2.compile(
    r"(?i)([\w.-]{0,40}(?:passw(?:or)?d|passphrase|pwd|\bpass\b|_pass\b|_pw\b|\bpw\b|secret|"
    r"secrete|api[_.-]?key|apikey|access[_.-]?key|auth[_.-]?token|access[_.-]?token|"
    r"private[_.-]?key|client[_.-]?secret|credentials?|token|key)[\w.-]{0,20})"
    r"[\"'`]?\s*(?::=|=>|\?=|==|=|:|<-)\s*(@?[\"'`]?)([^\s\"'`,;]{4,200}|[^\"'`\n]{4,200})"
)
# a name whose only secret word is `key` (`sort_key`, `softlayer-key`) needs a strong value
STRONG_NAME = re2.compile(
    r"(?i)passw|passphrase|pwd|pass\b|pw\b|secret|token|credential|api.?key|access.?key|private.?key"
)
# detect-secrets' plugins' token shapes and curate's own, for the kinds gitleaks' rules
# miss or bound by entropy (a test key `AKIAZZZZ…` is still a key's shape)
TOKENS = re2.compile(
    r"\b(?:(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,}"
    r"|sk-(?:proj-|svcacct-|admin-|ant-[a-z0-9]+-)?[A-Za-z0-9_-]{20,}"
    r"|[rs]k_(?:live|test)_[0-9A-Za-z]{16,}|xox[abposre]-(?:[0-9]+-)+[A-Za-z0-9]+"
    r"|xapp-[0-9]-[A-Z0-9]+-[0-9]+-[a-z0-9]+|AIza[0-9A-Za-z_-]{35}"
    r"|(?:glpat|gldt|glft|glsoat|glrt|glcbt|glimt|glptt|glagent|gloas|glsa)-[A-Za-z0-9_-]{20,64}"
    r"|GR1348941[A-Za-z0-9_-]{20,50}|hf_[A-Za-z]{34}|api_org_[A-Za-z]{34}"
    r"|npm_[A-Za-z0-9]{36}|pypi-AgE[A-Za-z0-9_-]{50,}|SG\.[\w-]{16,32}\.[\w-]{16,64}"
    r"|sq0(?:csp|atp)-[0-9A-Za-z_\\-]{22,43}|dapi[a-f0-9]{32}(?:-\d)?"
    r"|AP[0-9ABCDEF][A-Za-z0-9]{8,}|AKC[A-Za-z0-9]{10,}|(?:AC|SK)[a-z0-9]{32}"
    r"|[0-9a-f]{32}-us[0-9]{1,2}|[0-9]{8,10}:AA[0-9A-Za-z_-]{33}"
    r"|[MNO][A-Za-z0-9_-]{23,25}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,38})(?:\b|$)"
)
URL_CREDENTIALS = re2.compile(r"\b[a-z][a-z0-9+.-]*://[^:/\s@]+:([^@/\s]{3,})@")
FLAG = re2.compile(
    r"(?i)--[\w-]*(?:key|token|secret|passw(?:or)?d|pwd)[\w-]*[ =]([\"']?)([^\s\"']{8,200})"
)
QUOTED = re2.compile(r"[\"'`]([A-Za-z0-9+/_=-]{20,120})[\"'`]")

NOT_A_SECRET_NAME = re2.compile(
    r"(?i)(?:id|ids|name|type|file|path|url|uri|length|size|endpoint|format|field|header|"
    r"prefix|count|expires?|expiry|enabled|required|policy|hint|label|version)[\"'`]?$"
)
# values a key name is given that are not secrets: placeholders, variables, calls, types
_NOT_SECRET = re2.compile(
    r"(?i)^(?:[\[{<(].*[\]}>)]|\$\{?\w+\}?|%\w+%|\{\{.*\}\}|(?:os\.)?(?:getenv|environ|env|"
    r"process\.env|config|settings|self|this|request|args|params|options)\b.*|null|none|nil|"
    r"true|false|undefined|string|str|int|bool|password|secret|token|changeme|"
    r"(?:x+|\*+|\.+|-+|_+)|your[_-].*|<.*|[A-Za-z_][\w.]*\(.*|[a-z_]+(?:\.[a-z_]+)+|[a-z_]+\[.*|"
    r".*(?:fake|example|dummy|sample|placeholder|insert|xxxx|redacted|_here|here_).*|"
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)
_RUN = r"[A-Za-z0-9_+/=~.-]{16}"  # a token-like run, 16 characters or more
# a letter no hex digest holds, next to a digit, inside such a run: a token, not a SHA
_MIXED = r"[g-zG-Z_+/=~][A-Za-z0-9_+/=~.-]{0,15}\d|\d[A-Za-z0-9_+/=~.-]{0,15}[g-zG-Z_+/=~]"


@functools.cache
def prefilters() -> tuple[tuple[str, ...], ...]:
    """RE2 patterns, each a tuple whose parts must all match (one vectorized pass per
    part): every text a secret can be found in matches one of them."""
    kept = [r for r in rules()[0] if not r.id.startswith("generic")]
    # keywords that are not words (`glpat-`, `hf_`); `s.` and such, in every sentence, left
    # to the token-run passes
    prefixes = sorted({k for r in kept for k in r.keywords if not k.isalpha() and len(k) > 2})
    vendors = sorted({k for r in kept for k in r.keywords if k.isalpha() and len(k) > 3})
    names = (
        r"(?:pass|pwd|pw\b|secret|api.?key|access.?key|token|credential|key)"
        r"[ \t\w.-]{0,20}[\"'`]?\s*(?::=|=>|\?=|!==?|===?|=|:|<-|,|>|\|\|)"
    )
    plain = [
        TOKENS.pattern,
        r"PRIVATE KEY",
        r"\bcurl\b",  # gitleaks' curl rules: `-u user:password`, `-H 'Authorization: …'`
        r"eyJ[A-Za-z0-9_-]{4}",
        r"://[^/\s:@]+:[^@/\s]+@",
        r"(?i)" + names,
        r"(?i)--[\w-]*(?:key|token|secret|passw|pwd)",
        r"(?i)(?:" + "|".join(re.escape(k) for k in prefixes) + ")",
    ]
    return (
        ("|".join(f"(?:{p})" for p in plain),),
        (_RUN, _MIXED),
        # a vendor's name and a shorter run (`SUMO_ACCESS_ID = "suGyI5imvADdvU"`)
        (r"(?i)(?:" + "|".join(vendors) + ")", r"[A-Za-z0-9_+/=~.-]{10}"),
    )


@dataclass(frozen=True)
class Rule:
    """One gitleaks rule, compiled."""

    id: str
    regex: Any
    keywords: tuple[str, ...]
    entropy: float
    group: int | None
    allow: tuple[tuple[str, Any, tuple[str, ...]], ...]  # (target, regex or None, stopwords)


@functools.cache
def rules() -> tuple[tuple[Rule, ...], Any, tuple[str, ...]]:
    """gitleaks' rules and its global allowlist (regex, stopwords)."""
    config = tomllib.loads(RULES_FILE.read_text(encoding="utf-8"))
    compiled = []
    for r in config["rules"]:
        if "regex" not in r:  # a rule on file names only
            continue
        allow = []
        for a in r.get("allowlists", []):
            if a.get("paths") and (a.get("condition") == "AND" or not a.get("regexes")):
                continue  # about file paths: rows have none
            regex = "|".join(f"(?:{x})" for x in a.get("regexes", []))
            allow.append(
                (
                    a.get("regexTarget", "secret"),
                    re2.compile(regex) if regex else None,
                    tuple(w.lower() for w in a.get("stopwords", [])),
                )
            )
        compiled.append(
            Rule(
                r["id"],
                re2.compile(r["regex"]),
                tuple(k.lower() for k in r.get("keywords", [])),
                float(r.get("entropy", 0.0)),
                r.get("secretGroup"),
                tuple(allow),
            )
        )
    top = config.get("allowlist", {})
    allow_regex = re2.compile("|".join(f"(?:{x})" for x in top.get("regexes", [])) or "$^")
    return tuple(compiled), allow_regex, tuple(top.get("stopwords", []))


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values()) if n else 0.0


def _gitleaks(text: str, opened: Iterable[int] | None) -> Iterator[Span]:
    """gitleaks' rules over `text`: those of the gates `opened` (indexes into `gates()`,
    matched by the caller over many texts at once), else of every gate `text` matches."""
    _, allow_regex, stopwords = rules()
    lower = text.lower()
    every = gates()
    chosen = (
        opened
        if opened is not None
        else (g for g, (gate, _, _) in enumerate(every) if gate.search(text))
    )
    for g in chosen:
        yield from _rules(every[g][2], text, lower, allow_regex, stopwords)


def gate_hits(texts: Any) -> Any:
    """(gates × texts) booleans: which gates each text of an Arrow string array opens, one
    vectorized RE2 pass per gate (a Python call per text and gate costs 20x more)."""
    import numpy as np
    import pyarrow.compute as pc

    return (
        np.stack(
            [
                pc.fill_null(pc.match_substring_regex(texts, pattern), False).to_numpy(
                    zero_copy_only=False
                )
                for _, pattern, _ in gates()
            ]
        )
        if len(texts)
        else np.zeros((len(gates()), 0), dtype=bool)
    )


def _rules(
    group: tuple[Rule, ...], text: str, lower: str, allow_regex: Any, stopwords: tuple[str, ...]
) -> Iterator[Span]:
    for rule in group:
        if rule.keywords and not any(k in lower for k in rule.keywords):
            continue
        for m in rule.regex.finditer(text):
            start, end = _secret_span(m, rule.group)
            secret = text[start:end]
            if not secret or rule.entropy and entropy(secret) <= rule.entropy:
                continue
            if (
                rule.entropy
                and rule.id.startswith("generic")
                and not any(c.isdigit() for c in secret)
            ):
                continue  # gitleaks': a generic secret holds a digit
            if allow_regex.search(secret) or any(w in secret.lower() for w in stopwords):
                continue
            if _allowed(rule, m.group(0), secret, text, m.start()):
                continue
            yield "api_key", start, end


def _secret_span(m: Any, group: int | None) -> tuple[int, int]:
    """The secret of a match: the rule's secret group, else its first group that matched,
    else the whole match (gitleaks' choice)."""
    if group:
        return m.span(group)
    for g in range(1, (m.re.groups or 0) + 1):
        if m.group(g):
            return m.span(g)
    return m.span()


def _allowed(rule: Rule, match: str, secret: str, text: str, at: int) -> bool:
    low = secret.lower()
    for target, regex, stop in rule.allow:
        if stop and any(w in low for w in stop):
            return True
        if regex is None:
            continue
        if target == "line":
            line_start = text.rfind("\n", 0, at) + 1
            line_end = text.find("\n", at)
            subject = text[line_start : line_end if line_end >= 0 else len(text)]
        else:
            subject = match if target == "match" else secret
        if regex.search(subject):
            return True
    return False


def _private_keys(text: str) -> Iterator[Span]:
    for m in PRIVATE_KEY.finditer(text):
        end = KEY_END.search(text, m.end())
        stop = end.end() if end is not None else None
        if stop is None:  # no END line: the header and the key lines that follow it
            body = KEY_BODY.match(text, m.end())
            stop = body.end() if body else m.end()
        if sum(c.isalnum() for c in text[m.end() : stop]) >= 32:  # not a bare example
            yield "private_key", m.start(), stop


def _jwts(text: str) -> Iterator[Span]:
    for m in JWT.finditer(text):
        header = m.group(0).split(".")[0]
        try:
            decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            continue
        if isinstance(decoded, dict) and ("alg" in decoded or "typ" in decoded):
            yield "api_key", m.start(), m.end()


def _shaped(text: str) -> Iterator[Span]:
    """Tokens by their shape alone, credentials in URLs, values of `--…-key` flags."""
    for m in TOKENS.finditer(text):
        yield "api_key", m.start(), m.end()
    for m in URL_CREDENTIALS.finditer(text):
        if not m.group(1).startswith(("$", "{", "%")):
            yield "secret", m.start(1), m.end(1)
    for m in FLAG.finditer(text):
        if not _NOT_SECRET.match(m.group(2)) and sum(c.isalnum() for c in m.group(2)) >= 8:
            yield "secret", m.start(2), m.end(2)


def _assigned(text: str) -> Iterator[Span]:
    for m in AWS_SECRET.finditer(text):
        yield "api_key", m.start(1), m.end(1)
    for m in ASSIGNED.finditer(text):
        quote = m.group(2).lstrip("@")
        if quote:  # the value runs to its closing quote, spaces and all
            close = text.find(quote, m.start(3), m.start(3) + 201)
            if close < 0 or "\n" in text[m.start(3) : close]:
                continue
            value = text[m.start(3) : close]
        else:
            value = m.group(3).strip()
        if len(value) < 6 or _NOT_SECRET.match(value) or value.lower() in m.group(1).lower():
            continue
        if NOT_A_SECRET_NAME.search(m.group(1)) or sum(c.isalnum() for c in value) < 4:
            continue  # `credentialsId`, `token_url`; `password = ,.:-`
        if not STRONG_NAME.search(m.group(1)) and not _strong(value):
            continue  # `primary_key: user_name`
        if not quote and (value.isalpha() and value.islower() or " " in value):
            continue  # prose: "the token: something"
        start = m.start(3) if quote else m.start(3) + len(m.group(3)) - len(m.group(3).lstrip())
        yield "secret", start, start + len(value)


def _strong(value: str) -> bool:
    """Long, with letters and digits: a key, not a word or a number."""
    return (
        len(value) >= 16
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
        and entropy(value) > 3.0
    )


def _quoted(text: str) -> Iterator[Span]:
    for m in QUOTED.finditer(text):
        s = m.group(1)
        has = [any(f(c) for c in s) for f in (str.isupper, str.islower, str.isdigit)]
        if all(has) and entropy(s) > 4.5 and not _uuid_or_hex(s):
            yield "secret", m.start(1), m.end(1)


def _uuid_or_hex(s: str) -> bool:
    return all(c in "0123456789abcdefABCDEF-" for c in s)


def find(text: str, opened: Iterable[int] | None = None) -> Iterator[Span]:
    """Every secret in `text` as (kind, start, end); spans may overlap. `opened`: the
    gitleaks gates the text opens, when the caller matched them in bulk (`gate_hits`)."""
    if "PRIVATE KEY" in text:
        yield from _private_keys(text)
    if "eyJ" in text:
        yield from _jwts(text)
    yield from _shaped(text)
    yield from _assigned(text)
    yield from _quoted(text)
    yield from _gitleaks(text, opened)


# a leading `[\w.-]{0,50}?` (gitleaks' semi-generic rules) changes where a match starts, not
# whether there is one: left out of the gates, whose automata it would multiply
_LEAD = re.compile(r"^(\(\?i\))?\[\\w\.-\]\{0,50\}\?")
GATE_CHARS = 1000  # rules per gate: as many as fit this much regex (RE2's DFA stays small)


@functools.cache
def gates() -> tuple[tuple[Any, str, tuple[Rule, ...]], ...]:
    """gitleaks' rules in groups, each behind one RE2 pattern that matches wherever one of
    its rules can: a text no gate matches is not tried against any rule."""
    ruleset = rules()[0]
    groups: list[list[Rule]] = [[]]
    size = 0
    for rule in ruleset:
        if groups[-1] and size + len(rule.regex.pattern) > GATE_CHARS:
            groups.append([])
            size = 0
        groups[-1].append(rule)
        size += len(rule.regex.pattern)
    patterns = [
        "|".join(f"(?:{_LEAD.sub(_keep_flag, r.regex.pattern)})" for r in g) for g in groups
    ]
    return tuple((re2.compile(p), p, tuple(g)) for p, g in zip(patterns, groups, strict=True))


def _keep_flag(m: Any) -> str:
    return m.group(1) or ""
