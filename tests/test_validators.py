"""Row-quality validators: each planted case caught with its reason and count, clean rows kept."""

from __future__ import annotations

import json

import pytest

from curate.validators.pii import is_iban, is_luhn, redact
from tests.conftest import build, chat, write_config, write_jsonl

CLEAN = [
    chat("How do I reset my password?", "Open Settings, choose Security, then Reset password."),
    chat("What is 12 times 12?", "12 times 12 is 144."),
    chat("Name three colours.", "Red, green and blue."),
]


def test_luhn_and_iban_checksums():
    assert is_luhn("4111111111111111") and not is_luhn("4111111111111112")
    assert is_iban("DE89 3704 0044 0532 0130 00") and not is_iban("DE89 3704 0044 0532 0130 01")


def test_redact_each_kind_with_typed_placeholders():
    text = (
        "Mail jane.doe@example.com or call +1 (415) 555-2671. Card 4111 1111 1111 1111, "
        "IBAN GB82 WEST 1234 5698 7654 32, key AKIAIOSFODNN7EXAMPLE, token "
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789AB.\n"
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
        "-----END RSA PRIVATE KEY-----"
    )
    out, found = redact(text)
    assert found == {
        "email": 1,
        "phone": 1,
        "credit_card": 1,
        "iban": 1,
        "api_key": 2,
        "private_key": 1,
    }
    for placeholder in (
        "[EMAIL]",
        "[PHONE]",
        "[CREDIT_CARD]",
        "[IBAN]",
        "[API_KEY]",
        "[PRIVATE_KEY]",
    ):
        assert placeholder in out
    assert "jane.doe" not in out and "4111" not in out and "AKIA" not in out


@pytest.mark.parametrize(
    "text",
    [
        "The answer is 4111 1111 1111 1112 units.",  # fails Luhn
        "In 2023 there were 12 345 678 visitors.",  # numbers, not a phone
        "Compute 48/2 = 24 and 48+24 = 72.",
        "He has 1000-200-400 = <<1000-200-400=400>>400 pounds left.",  # GSM8K arithmetic
        "Profit: 14000-3920-1000=$9080",
        "IBAN-like GB82 WEST 1234 5698 7654 33 with a bad checksum",
    ],
)
def test_redact_leaves_hard_negatives_alone(text):
    assert redact(text) == (text, {})


def pii_rows():
    return [
        *CLEAN,
        chat("My email is bob@corp.example, please reply", "I will reply to you by email."),
        chat("Here is my card 5555 5555 5555 4444", "Never share card numbers."),
        chat("Deploy with key AKIAIOSFODNN7EXAMPLE", "Rotate that key now."),
    ]


def test_pii_redact_keeps_rows_with_placeholders(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", pii_rows())
    cfg = write_config(
        tmp_path, [{"name": "a", "path": "a.jsonl"}], extra='[validate]\npii = "redact"\n'
    )
    b = build(cfg)
    assert b.manifest["counts"]["rows_rejected"] == 0
    text = json.dumps([r["messages"] for r in b.rows])
    assert "[EMAIL]" in text and "[CREDIT_CARD]" in text and "[API_KEY]" in text
    assert "bob@corp" not in text and "5555 5555" not in text and "AKIA" not in text
    assert b.manifest["validation"]["a"]["pii"] == {
        "rows": 3,
        "by_type": {"api_key": 1, "credit_card": 1, "email": 1},
    }


def test_pii_reject_keeps_no_secret_in_the_ledger(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", pii_rows())
    cfg = write_config(
        tmp_path, [{"name": "a", "path": "a.jsonl"}], extra='[validate]\npii = "reject"\n'
    )
    b = build(cfg)
    assert b.manifest["counts"]["rejected"] == {"pii": 3}
    assert len(b.rows) == len(CLEAN)
    ledger = json.dumps([r["messages"] for r in b.ledger])
    assert "bob@corp" not in ledger and "[EMAIL]" in ledger
    assert sorted(json.dumps(b.detail(r)["types"]) for r in b.rejected("pii")) == [
        '{"api_key": 1}',
        '{"credit_card": 1}',
        '{"email": 1}',
    ]


def test_language_rejects_other_languages(tmp_path):
    rows = [
        *CLEAN,
        chat(
            "Comment puis-je réinitialiser mon mot de passe ?",
            "Ouvrez les paramètres, choisissez Sécurité, puis réinitialisez le mot de passe.",
        ),
        chat(
            "Wie setze ich mein Passwort zurück?",
            "Öffnen Sie die Einstellungen, wählen Sie Sicherheit und setzen Sie das Passwort zurück.",
        ),
    ]
    write_jsonl(tmp_path / "a.jsonl", rows)
    cfg = write_config(
        tmp_path, [{"name": "a", "path": "a.jsonl"}], extra='[validate]\nlanguages = ["en"]\n'
    )
    b = build(cfg)
    assert b.manifest["counts"]["rejected"] == {"language": 2}
    assert sorted(b.detail(r)["language"] for r in b.rejected("language")) == ["de", "fr"]
    assert b.manifest["validation"]["a"]["languages"] == {"en": 3}


def test_label_leakage(tmp_path):
    answer = "The mitochondria is the powerhouse of the cell."
    rows = [
        *CLEAN,
        chat(f"Repeat after me: {answer}", answer),  # the answer is in the prompt
        chat("Is 144 the answer to 12 times 12?", "144"),  # short answers may repeat
    ]
    write_jsonl(tmp_path / "a.jsonl", rows)
    cfg = write_config(
        tmp_path, [{"name": "a", "path": "a.jsonl"}], extra="[validate]\nlabel_leakage = true\n"
    )
    b = build(cfg)
    assert b.manifest["counts"]["rejected"] == {"label_leakage": 1}
    (leak,) = b.rejected("label_leakage")
    assert b.detail(leak) == {"turn": 1, "chars": len(answer)}


def test_json_format_against_the_source_schema(tmp_path):
    schema = {
        "type": "object",
        "properties": {"intent": {"type": "string"}, "priority": {"type": "integer"}},
        "required": ["intent", "priority"],
    }
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    rows = [
        chat("Classify: my sync is broken", '{"intent": "sync", "priority": 2}'),
        chat("Classify: refund please", '{"intent": "billing", "priority": "high"}'),
        chat("Classify: hello", "intent=greeting"),
    ]
    write_jsonl(tmp_path / "j.jsonl", rows)
    write_jsonl(tmp_path / "free.jsonl", CLEAN)
    cfg = write_config(
        tmp_path,
        [
            {"name": "j", "path": "j.jsonl", "json_schema": "schema.json"},
            {"name": "free", "path": "free.jsonl"},
        ],
    )
    b = build(cfg)
    assert b.manifest["counts"]["rejected"] == {"invalid_format": 2}
    details = sorted((b.detail(r) for r in b.rejected("invalid_format")), key=str)
    assert details[0]["path"] == "$.priority"
    assert details[1]["error"].startswith("not JSON")


def test_bad_json_schema_is_a_config_error(tmp_path, cli):
    (tmp_path / "schema.json").write_text('{"type": 12}')
    write_jsonl(tmp_path / "a.jsonl", CLEAN)
    cfg = write_config(tmp_path, [{"name": "a", "path": "a.jsonl", "json_schema": "schema.json"}])
    r = cli("build", cfg)
    assert r.code == 2 and "json_schema: not a valid JSON schema" in r.err


def test_degeneration(tmp_path):
    loop = "I am sorry but " * 20
    normal = (
        "First measure the flour and sugar, then whisk the eggs until pale. Fold the dry "
        "ingredients into the wet ones with a spatula, pour the batter into a buttered tin, "
        "and bake for forty minutes until a skewer comes out clean. Let it cool on a rack."
    )
    rows = [*CLEAN, chat("Help me", loop), chat("Explain", normal)]
    write_jsonl(tmp_path / "a.jsonl", rows)
    cfg = write_config(
        tmp_path, [{"name": "a", "path": "a.jsonl"}], extra="[validate]\ndegeneration = true\n"
    )
    b = build(cfg)
    assert b.manifest["counts"]["rejected"] == {"degenerate": 1}
    (bad,) = b.rejected("degenerate")
    assert b.detail(bad)["top_ngram"] in ("i am sorry", "am sorry but", "sorry but i", "but i am")


def test_system_prompt_variants_and_lengths_reported(tmp_path, cli):
    rows = [
        chat("q1", "a1", system="You are Nimbus."),
        chat("q2", "a2", system="You are Nimbus."),
        chat("q3", "a3", system="You are a pirate."),
        chat("q4", "a4"),
    ]
    write_jsonl(tmp_path / "a.jsonl", rows)
    cfg = write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}])
    r = cli("build", cfg, "--json")
    out = r.json()
    assert any("3 different system prompts" in w for w in out["warnings"])
    m = cli("show", out["manifest_id"], "--store", tmp_path / ".curate", "--json").json()
    prompts = m["validation"]["a"]["system_prompts"]
    assert prompts["variants"] == 3
    assert prompts["top"][0] == {"text": "You are Nimbus.", "rows": 2}
    lengths = m["validation"]["a"]["lengths"]
    assert lengths["unit"] == "chars" and lengths["max"] == len("You are a pirate.q3a3")
