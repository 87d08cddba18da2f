"""Instructions a rule can verify (IFEval-style), for the forgetting probe: a general skill
the base model had is kept when its answers still follow instructions like these.

A probe item names its checks: `{"prompt": "...", "checks": [{"kind": "max_words",
"value": 50}, {"kind": "keywords", "value": ["tide", "moon"]}]}`; an answer passes the item
when it passes every check. Kinds: `min_words`, `max_words`, `keywords` (every one, as a
word, any case), `forbidden` (none of them), `json` (parses as an object or array),
`bullets` (exactly n lines starting `- `, `* ` or `• `), `lowercase`, `uppercase`,
`starts_with`, `ends_with` (any case, spaces around ignored), `language` (fastText's
lid.176, as builds use it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

BULLET = re.compile(r"^\s*[-*•]\s+\S", re.MULTILINE)
WORD = re.compile(r"\w+(?:['’]\w+)*")


def _words(text: str) -> int:
    return len(WORD.findall(text))


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(word.lower())}(?!\w)", text.lower()) is not None


def _is_json(text: str) -> bool:
    body = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, re.DOTALL)
    try:
        return isinstance(json.loads(fenced.group(1) if fenced else body), dict | list)
    except ValueError:
        return False


def _language(text: str, code: str) -> bool:
    from curate.validators.quality import lid_model

    labels, _ = lid_model().predict(" ".join(text.split())[:2000], k=1)
    return bool(labels) and labels[0].removeprefix("__label__") == code


CHECKS: dict[str, Callable[[str, Any], bool]] = {
    "min_words": lambda t, v: _words(t) >= int(v),
    "max_words": lambda t, v: _words(t) <= int(v),
    "keywords": lambda t, v: all(_has_word(t, w) for w in v),
    "forbidden": lambda t, v: not any(_has_word(t, w) for w in v),
    "json": lambda t, _: _is_json(t),
    "bullets": lambda t, v: len(BULLET.findall(t)) == int(v),
    "lowercase": lambda t, _: t == t.lower() and any(c.isalpha() for c in t),
    "uppercase": lambda t, _: t == t.upper() and any(c.isalpha() for c in t),
    "starts_with": lambda t, v: t.strip().lower().startswith(str(v).strip().lower()),
    "ends_with": lambda t, v: t.strip().lower().endswith(str(v).strip().lower()),
    "language": lambda t, v: _language(t, str(v)),
}


def unknown_checks(checks: list[dict[str, Any]]) -> list[str]:
    """The kinds in `checks` no checker exists for (a probe file's problem, said at load)."""
    return [str(c.get("kind")) for c in checks if c.get("kind") not in CHECKS]


def follows(answer: str, checks: list[dict[str, Any]]) -> bool:
    """Whether `answer` passes every check of an item."""
    return all(CHECKS[c["kind"]](answer, c.get("value")) for c in checks)
