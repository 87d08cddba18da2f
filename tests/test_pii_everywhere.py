"""A redacting (or rejecting) build keeps no secret in any text it stores or prints."""

from __future__ import annotations

import json

import pytest

from tests.conftest import build, chat, write_config, write_jsonl

SECRETS = [
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_" + "a1B2c3D4e5" * 4,
    "4111 1111 1111 1111",
    "+1 (555) 123-4567",
    "jane.doe@example.com",
    "sk-proj-" + "Zx9" * 10,
]


def _rows() -> list:
    s = SECRETS
    rows: list = [chat(f"question {i}", f"answer {i}") for i in range(6)]
    rows += [
        '{"messages": [broken ' + s[0] + " and " + s[4],  # malformed
        {"messages": "not a list " + s[1]},  # invalid_schema, secret in the evidence
        {
            "messages": [
                {"role": "user", "content": "card " + s[2]},
                {"role": "assistant", "content": ""},
            ]
        },
        {
            **chat("plain question", "plain answer"),
            "customer_email": s[4],
            "key": s[5],
            "phone": s[3],
        },
        {**chat("another question", "fine"), "nested": {"card": s[2], "n": 4111111111111111}},
    ]
    return rows


@pytest.mark.parametrize("mode", ["redact", "reject"])
def test_no_secret_survives_in_store_or_output(tmp_path, cli, mode):
    write_jsonl(tmp_path / "a.jsonl", _rows())
    cfg = write_config(
        tmp_path, [{"name": "a", "path": "a.jsonl"}], extra=f'[validate]\npii = "{mode}"\n'
    )
    b = build(cfg)
    store = tmp_path / ".store"
    reasons = {r["reason"] for r in b.ledger}
    assert {"malformed", "invalid_schema", "empty_response"} <= reasons
    printed = [
        cli("review", b.id, "--json", "-n", "50", "--store", store).out,
        cli("query", b.id, "SELECT * FROM ledger", "--json", "--store", store).out,
        cli("query", b.id, "SELECT * FROM rows", "--json", "--store", store).out,
        cli("show", b.id, "--json", "--store", store).out,
    ]
    assert cli("export", b.id, "--out", tmp_path / "x", "--store", store).code == 0
    # every file the store keeps (objects, manifests, caches), not only what it serves
    stored = [p.read_bytes().decode("utf-8", "replace") for p in store.rglob("*") if p.is_file()]
    stored += [p.read_text() for p in (store / "manifests").iterdir()]
    stored += [p.read_text() for p in (tmp_path / "x").iterdir()]
    # Parquet may compress a value: read the ledger and rows back as text too
    stored += [json.dumps(b.ledger, default=str), json.dumps(b.rows, default=str)]
    for text in printed + stored:
        for secret in SECRETS + ["4111111111111111", "555) 123"]:
            assert secret not in text, (secret, text[:300])
    meta = [json.loads(r["meta"]) for r in b.rows + b.ledger if r.get("meta")]
    assert {"customer_email": "[EMAIL]", "key": "[API_KEY]", "phone": "[PHONE]"} in meta
    if mode == "reject":
        assert {r["origin"].split(":")[1] for r in b.rejected("pii")} == {"10", "11"}
