"""Make bench/cases/pii.jsonl: the secret and PII test cases of the tools curate is measured
against, taken from their own public repositories (not written here).

- detect-secrets 1.5 (Yelp/detect-secrets, tests/plugins/*_test.py): each plugin test's
  parametrized lines, run through pytest's own parametrize (recorded, not re-typed):
  `should_flag` True/False, or a test whose name says it finds nothing.
- Presidio analyzer (microsoft/presidio, presidio-analyzer/tests/test_*_recognizer.py) for
  email, phone, credit card, IBAN, IP and US SSN: `expected_len` entities per text. Cases
  whose every expected score is below 0.5 are Presidio's own "weak match" (a bare 9-digit
  number as an SSN): kept, marked `weak`, reported apart from recall.
- gitleaks (gitleaks/gitleaks, cmd/generate/config/rules/*.go): each rule's literal true
  and false positives (`tps`, `fps`; the ones gitleaks generates at test time from the rule's
  own regex are left out: they would measure the regex against itself).

Each case: {"kind", "text", "expected" (entities; 0 = must find nothing), "weak", "source"}.
Run with the three repositories checked out (paths as arguments); the output is committed,
so the bench needs none of them.

    python bench/pii_cases.py DETECT_SECRETS PRESIDIO GITLEAKS
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "cases" / "pii.jsonl"

# detect-secrets plugin test → the kind its positives are (all secret kinds but the IP)
DS_KIND = {"ip_public": "ip_public"}  # public addresses only: reported apart
PRESIDIO = {
    "email": "email",
    "phone": "phone",
    "credit_card": "credit_card",
    "iban": "iban",
    "ip": "ip",
    "us_ssn": "ssn",
}


def _commit(repo: Path) -> str:
    """The checkout's commit (`.commit` beside an exported tree, else git's)."""
    if (repo / ".commit").is_file():
        return (repo / ".commit").read_text().strip()[:12]
    return subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()[:12]


class _Recorder:
    """Stands in for `pytest.mark.parametrize`: remembers every call's names and values."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], list[Any]]] = []
        self.current = ""

    def __call__(self, names: Any, values: Any, **_: Any) -> Any:
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        values = [v.values if hasattr(v, "values") else v for v in values]
        recorded = (names, values)

        def mark(fn: Any) -> Any:
            self.calls.append((getattr(fn, "__name__", "?"), *recorded))
            return fn

        return mark


def _load_with_recorder(path: Path, root: Path, recorder: _Recorder) -> None:
    import pytest

    saved = pytest.mark.parametrize
    pytest.mark.parametrize = recorder  # type: ignore[attr-defined]
    sys.path.insert(0, str(root))
    try:
        spec = importlib.util.spec_from_file_location(f"case_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    finally:
        pytest.mark.parametrize = saved  # type: ignore[attr-defined]
        sys.path.remove(str(root))


def detect_secrets_cases(root: Path) -> list[dict[str, Any]]:
    source = f"detect-secrets@{_commit(root)}"
    out = []
    for path in sorted((root / "tests" / "plugins").glob("*_test.py")):
        plugin = path.stem.removesuffix("_test")
        if plugin in ("base", "high_entropy_strings"):  # generic machinery; entropy below
            continue
        recorder = _Recorder()
        try:
            _load_with_recorder(path, root, recorder)
        except Exception as exc:  # noqa: BLE001 - a test module that needs more than we have
            print(f"skipped {path.name}: {exc}", file=sys.stderr)
            continue
        for test, names, values in recorder.calls:
            if "find_" in test or "_get_" in test:  # a helper's test (account, user id)
                continue
            for value in values:
                row = dict(
                    zip(names, value if isinstance(value, tuple | list) else (value,), strict=False)
                )
                text = next(
                    (
                        v
                        for k, v in row.items()
                        if isinstance(v, str) and k in ("line", "payload", "content", "secret")
                    ),
                    None,
                )
                if text is None:
                    continue
                flag = next((v for v in row.values() if isinstance(v, bool)), None)
                if flag is None:
                    expected = row.get("expected_output", row.get("expected_secret", ...))
                    flag = (
                        bool(expected)
                        if expected is not ...
                        else "not" not in test and "no_" not in test
                    )
                kind = DS_KIND.get(plugin, "secret")
                out.append({"kind": kind, "text": text, "expected": int(flag), "weak": False,
                            "source": f"{source}:{path.name}:{test}"})  # fmt: skip
    return out


def presidio_cases(root: Path) -> list[dict[str, Any]]:
    base = root / "presidio-analyzer"
    source = f"presidio@{_commit(root)}"
    # the tests' helpers (`from tests import assert_result`) and a stand-in for their
    # fixtures module are all they import besides presidio
    helpers = types.ModuleType("tests")
    helpers.__getattr__ = lambda name: None  # type: ignore[method-assign]
    sys.modules["tests"] = helpers
    out = []
    for name, kind in PRESIDIO.items():
        path = base / "tests" / f"test_{name}_recognizer.py"
        recorder = _Recorder()
        _load_with_recorder(path, base, recorder)
        for test, names, values in recorder.calls:
            if "expected_len" not in names:
                continue
            text_name = "text" if "text" in names else names[0]
            for value in values:
                row = dict(zip(names, value, strict=False))
                ranges = row.get("expected_score_ranges") or ()
                weak = bool(ranges) and all(
                    isinstance(r, tuple) and r and r[-1] != "max" and float(r[-1]) < 0.5
                    for r in ranges
                )
                out.append({"kind": kind, "text": row[text_name], "expected": int(row["expected_len"]),
                            "weak": weak, "source": f"{source}:{path.name}:{test}"})  # fmt: skip
    return out


_GO_STRING = re.compile(r'`([^`]*)`|"((?:[^"\\\n]|\\.)*)"')


def _go_literals(segment: str) -> list[str]:
    """The string literals that are elements of a Go list (`[]string{...}` or the rest of
    `append(tps, ...)`): not arguments of a call inside it (`fmt.Sprintf`,
    `GenerateSampleSecrets`, `NewSecret`: fragments of generated cases), not part of a `+`."""
    segment = re.sub(r"(?m)^\s*//.*$", "", segment)
    found, depth, i = [], 0, 0
    while i < len(segment):
        c = segment[i]
        if segment.startswith("//", i):  # a comment, to the end of its line
            i = segment.find("\n", i) % (len(segment) + 1) + 1
            continue
        m = _GO_STRING.match(segment, i)
        if m:
            before = segment[:i].rstrip()[-1:]
            after = segment[m.end() :].lstrip()[:1]
            if depth == 1 and "+" not in (before, after):
                found.append(
                    m.group(1)
                    if m.group(1) is not None
                    else ast.literal_eval('"' + m.group(2) + '"')
                )
            i = m.end()
            continue
        depth += c in "({"
        depth -= c in ")}"
        i += 1
    return found


def _balanced(text: str, start: int) -> str:
    """The text from `start` (an opening bracket) to its closing one, strings skipped."""
    pairs = {"{": "}", "(": ")"}
    stack, i = [text[start]], start + 1
    while i < len(text) and stack:
        c = text[i]
        if text.startswith("//", i):  # a comment, to the end of its line
            i = text.find("\n", i) % (len(text) + 1) + 1
            continue
        if c == "'":  # a rune literal, '`' or '"' say
            i = text.find("'", i + 2) + 1 or len(text)
            continue
        if c in '`"':
            end = text.find("`", i + 1) if c == "`" else _quote_end(text, i)
            if end < 0:
                break
            i = end + 1
            continue
        if c in pairs:
            stack.append(c)
        elif c in ")}" and pairs[stack[-1]] == c:
            stack.pop()
        i += 1
    return text[start:i]


def _quote_end(text: str, i: int) -> int:
    j = i + 1
    while text[j] != '"':
        j += 2 if text[j] == "\\" else 1
    return j


def gitleaks_cases(root: Path) -> list[dict[str, Any]]:
    source = f"gitleaks@{_commit(root)}"
    out = []
    for path in sorted((root / "cmd" / "generate" / "config" / "rules").glob("*.go")):
        code = path.read_text()
        for func in re.split(r"\nfunc ", code)[1:]:
            rule = re.search(r'RuleID:\s*"([^"]+)"', func)
            if not rule:
                continue
            for name, expected in (("tps", 1), ("fps", 0)):
                for m in re.finditer(
                    rf"\b{name}\s*(?::=|=)\s*(\[\]string\{{|append\({name},)", func
                ):
                    opener = (
                        m.end() - 1 if m.group(1).endswith("{") else m.end() - len(f"{name},") - 1
                    )
                    for text in _go_literals(_balanced(func, opener)):
                        if text.strip():
                            out.append({"kind": "secret", "text": text, "expected": expected,
                                        "weak": False, "source": f"{source}:{path.name}:{rule.group(1)}"})  # fmt: skip
    return out


def main(argv: list[str]) -> None:
    ds, presidio, gitleaks = (Path(a) for a in argv)
    cases = detect_secrets_cases(ds) + presidio_cases(presidio) + gitleaks_cases(gitleaks)
    # a line one gitleaks rule must not match may be another rule's secret: as a case of
    # "nothing to find" it would contradict that rule's positive
    positive = {c["text"] for c in cases if c["expected"]}
    cases = [c for c in cases if c["expected"] or c["text"] not in positive]
    seen, unique = set(), []
    for c in cases:
        key = (c["kind"], c["text"], c["expected"])
        if key not in seen:
            seen.add(key)
            unique.append(c)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in unique))
    by = {}
    for c in unique:
        k = (c["source"].split("@")[0], c["kind"], "pos" if c["expected"] else "neg")
        by[k] = by.get(k, 0) + 1
    for k, n in sorted(by.items()):
        print(*k, n)


if __name__ == "__main__":
    main(sys.argv[1:])
