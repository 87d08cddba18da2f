"""What the redactor finds and leaves: each kind the second hostile round named, the peers'
own test cases (detect-secrets, Presidio, gitleaks: bench/cases/pii.jsonl), and ordinary
rows it must leave alone."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from curate.validators.pii import find_all, redact, redact_texts

CASES = Path(__file__).resolve().parents[1] / "bench" / "cases" / "pii.jsonl"
SECRET = {"api_key", "secret", "private_key"}


def kinds(text: str) -> list[str]:
    return [k for k, _, _ in find_all(text)]


@pytest.mark.parametrize(
    ("text", "kind", "found"),
    [
        # IBANs: a word glued on, lowercase, dashes
        ("pay to DE89370400440532013000 OK thanks", "iban", "DE89370400440532013000"),
        ("iban: de89 3704 0044 0532 0130 00.", "iban", "de89 3704 0044 0532 0130 00"),
        ("GB82-WEST-1234-5698-7654-32", "iban", "GB82-WEST-1234-5698-7654-32"),
        # keys: PGP, PEM without its END line
        ("-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF0abcdefghijklmnopqrstuvwxyzABCDEF0123\n"
         "=abcd\n-----END PGP PRIVATE KEY BLOCK-----", "private_key", None),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0t\n",
         "private_key", None),
        # JWTs unsigned and alg-none
        ("t=eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxMjM0NTY3ODkwIn0.", "api_key", None),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIiwiaWF0IjoxNTE2MjM5MDIyfQ", "api_key", None),
        # 12-digit Maestro
        ("maestro 6759 6498 2648", "credit_card", "6759 6498 2648"),
        # AWS: STS ids and the secret key
        ("ASIAY34FZKBOKMUTVV7A", "api_key", "ASIAY34FZKBOKMUTVV7A"),
        ('aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"', "api_key",
         "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        # the vendor tokens an ML team meets
        ("HF_TOKEN=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", "api_key", None),
        ("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", "api_key", None),
        ("glpat-xY7bN3kQ9mZ2pL5wR8tV", "api_key", None),
        ("//registry.npmjs.org/:_authToken=npm_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5", "api_key",
         None),
        ("pypi-AgEIcHlwaS5vcmcCJGE4ZjU2ZTkwLTY3NDgtNDMxMi1hYjM0LWE3ZDc1OTIzZmQxNgACKlszLCJh",
         "api_key", None),
        ("https://hooks.slack.com/services/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",
         "api_key", None),
        ("xapp-1-A08B2C3D4E5-8123456789012-a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4",
         "api_key", None),
        ("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", "api_key", None),
        ("DATABRICKS_TOKEN=dapi3f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d", "api_key", None),
        ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "api_key", None),
        ('password = "hunter2-Correct"', "secret", "hunter2-Correct"),
        # phones: international, extensions, brackets
        ("call +44 (20) 7123 4567 now", "phone", "+44 (20) 7123 4567"),
        ("office: (415) 555-0132 ext. 12", "phone", None),
        ("+33 1 42 68 53 00", "phone", None),
        # addresses and SSNs
        ("from 203.0.113.9 and 2001:db8::8a2e:370:7334", "ip_address", "203.0.113.9"),
        ("SSN 078-05-1123 on file", "ssn", "078-05-1123"),
    ],
)  # fmt: skip
def test_each_kind_the_round_named_is_found(text, kind, found):
    spans = [(k, text[s:e]) for k, s, e in find_all(text)]
    hit = [s for k, s in spans if k == kind or kind == "secret" and k in SECRET]
    assert hit, spans
    if found is not None:
        assert any(found in h for h in hit), spans


@pytest.mark.parametrize(
    "text",
    [
        "Janet sells 16 - 3 - 4 = 9 duck eggs at $2 each: 9 * 2 = 18. #### 18",
        "1000-200-400 = 400",
        "created_at: 1748503543012",  # a Luhn-valid epoch in milliseconds
        "order #4835680618088027 shipped",  # a Luhn-valid order id with a Visa prefix
        "commit 3f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39 fixes it",
        "sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "request 123e4567-e89b-12d3-a456-426614174000",
        "upgrade to version 10.0.19041.1",
        "timestamp 1772698554",
        "return l[::-1] + s[::3] + l[1::2]",
        "maps.google.com/North+California+Avenue/@37.3362725,-121.9258",
        "std::vector<int> at 12:34:56",
        "The key: photosynthesis turns light into sugar.",
        "password: use at least eight characters",
        'token = tokenizer.encode("hello")',
        "valid_date('03-11-2000') => True",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert find_all(text) == []


def test_batch_path_gives_what_one_text_at_a_time_gives():
    """The vectorized pre-filters let through every text anything can be found in: on
    planted texts and every peer case, the column redacted equals each text redacted."""
    texts = [
        "mail a@b.co now",
        "nothing here",
        "key AKIA" + "QWERTYUIOPASDFGH",
        "x" * 30,
        "+1 (415) 555-0132",
        "HF 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",
        "",
    ]
    texts += [json.loads(line)["text"] for line in CASES.read_text().splitlines()]
    out, found = redact_texts(pa.array(texts, pa.string()))  # its pre-filters skip most
    one = [redact(t) for t in texts]
    assert out.to_pylist() == [text for text, _ in one]
    assert found == {i: kinds for i, (_, kinds) in enumerate(one) if kinds}


def _peer_cases() -> dict[str, list[int]]:
    """Per kind: entities expected and found over the peers' own positive cases."""
    totals: dict[str, list[int]] = {}
    for line in CASES.read_text().splitlines():
        c = json.loads(line)
        if not c["expected"] or c["weak"]:
            continue
        kind = {"ip": "ip_address", "ip_public": "ip_address"}.get(c["kind"], c["kind"])
        found = kinds(c["text"])
        hits = sum(1 for k in found if k == kind or kind == "secret" and k in SECRET)
        row = totals.setdefault(kind, [0, 0])
        row[0] += c["expected"]
        row[1] += min(hits, c["expected"])
    return totals


def test_recall_on_the_peers_own_test_cases():
    """detect-secrets', Presidio's and gitleaks' cases (not written here): ≥ 0.95 of each
    personal kind's entities, ≥ 0.9 of the secrets."""
    recall = {k: round(f / e, 3) for k, (e, f) in _peer_cases().items()}
    floors = {"secret": 0.9, "email": 0.95, "phone": 0.95, "credit_card": 0.95,
              "iban": 0.95, "ip_address": 0.95, "ssn": 0.95}  # fmt: skip
    assert {k: recall[k] >= floors[k] for k in floors} == dict.fromkeys(floors, True), recall


SHARED_DATA = CASES.parents[2].parent / "shared" / "data"


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data absent")
def test_ordinary_rows_of_shared_data_are_left_alone():
    """GSM8K, HumanEval and generated identifiers (hashes, UUIDs, SHAs, versions,
    timestamps, order ids): at most 0.1% of rows flagged."""
    sys.path.insert(0, str(CASES.parents[1]))
    from pii import ordinary_rows  # bench/pii.py: ../shared/data's rows

    families = ordinary_rows(synthetic=5_000)
    rows = families["gsm8k"] + families["humaneval"] + families["identifiers"]
    flagged = [r for r in rows if find_all(r)]
    assert len(flagged) <= len(rows) // 1000, flagged[:5]
