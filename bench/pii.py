"""Benchmark: curate's secret and PII redaction against detect-secrets 1.5, Presidio
analyzer 2.2 (its pattern recognizers: no spaCy model installs here) and scrubadub 2.0, on
the same cases and rows, in one run.

1. **Recall per kind on the peers' own test cases** (bench/cases/pii.jsonl, made by
   bench/pii_cases.py from detect-secrets', Presidio's and gitleaks' repositories): entities
   found of the case's kind (for secrets: any secret kind) over entities expected; cases
   Presidio itself marks as weak matches are counted apart. Negative cases (nothing to
   find) that a tool flags are counted too.
2. **False positives on ordinary rows**: ../shared/data's GSM8K, hh-rlhf, HumanEval,
   GPTeacher, Alpaca seeds, XSTest, AdvBench and 10,000 generated identifiers (SHA-256,
   commit SHAs, UUIDs, version strings, timestamps, order ids): rows where a tool flags
   anything of the kinds measured.
3. **Rows per second on one core**: curate's batch path (`redact_texts` over an Arrow
   column: the RE2 pre-filter, then Python on the rows it lets through) on every ordinary
   row; the peers one text at a time on a sample (`--sample`).

    python bench/pii.py [--sample 3000]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
CASES = HERE / "cases" / "pii.jsonl"
SECRET_KINDS = {"api_key", "secret", "private_key"}
PII_KINDS = ["email", "phone", "credit_card", "iban", "ip_address", "ssn"]
CASE_KIND = {"ip": "ip_address", "ip_public": "ip_address"}  # cases' kinds → curate's

# gitleaks' rule files for the tokens an ML team handles daily, shown one by one
ML_RULES = {
    "huggingface.go", "openai.go", "anthropic.go", "aws.go", "azure.go", "gcp.go", "github.go",
    "gitlab.go", "npm.go", "pypi.go", "slack.go", "stripe.go", "sendgrid.go", "databricks.go",
    "jwt.go", "privatekey.go", "generic.go",
}  # fmt: skip
Finder = Callable[[str], list[str]]  # text → the kinds found, one per entity


def ordinary_rows(synthetic: int = 10_000, seed: int = 0) -> dict[str, list[str]]:
    """Ordinary rows by family: ../shared/data's instruction, chat, safety, math and code
    rows, and generated identifiers a secret or card pattern must leave alone."""
    out: dict[str, list[str]] = {}
    gsm = []
    for name in ("instruct/gsm8k/train.jsonl", "evals/gsm8k/test.jsonl"):
        for line in (DATA / name).read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            gsm.append(d["question"] + "\n" + d["answer"])
    out["gsm8k"] = gsm
    with gzip.open(DATA / "safety/hh_rlhf_harmless_base_test.jsonl.gz", "rt") as fh:
        out["hh-rlhf"] = [json.loads(line)["chosen"] for line in fh]
    with gzip.open(DATA / "evals/humaneval/HumanEval.jsonl.gz", "rt") as fh:
        out["humaneval"] = [
            d["prompt"] + d["canonical_solution"] + d["test"] for d in map(json.loads, fh)
        ]
    gpt = []
    for name in ("toolformer-dedupe-only", "roleplay-simple-deduped-roleplay"):
        path = DATA / "instruct" / f"gpteacher_{name}-dataset.json"
        gpt += [
            f"{x['instruction']}\n{x['input']}\n{x['output']}" for x in json.loads(path.read_text())
        ]
    out["gpteacher"] = gpt
    alpaca = []
    for line in (
        (DATA / "instruct/alpaca_seed_tasks.jsonl").read_text(encoding="utf-8").splitlines()
    ):
        d = json.loads(line)
        alpaca += [f"{d['instruction']}\n{i['input']}\n{i['output']}" for i in d["instances"]]
    out["alpaca-seed"] = alpaca
    with open(DATA / "safety/xstest_prompts.csv", encoding="utf-8", newline="") as fh:
        out["xstest"] = [r["prompt"] for r in csv.DictReader(fh)]
    with open(DATA / "safety/advbench_harmful_behaviors.csv", encoding="utf-8", newline="") as fh:
        out["advbench"] = [f"{r['goal']}\n{r['target']}" for r in csv.DictReader(fh)]
    out["identifiers"] = _identifiers(synthetic, seed)
    return out


def _identifiers(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    made = []
    for i in range(n):
        h = hashlib.sha256(str(i).encode()).hexdigest()
        u = uuid.UUID(int=rng.getrandbits(128), version=4)
        r = rng.randint
        made.append(rng.choice([
            f"sha256: {h}",
            f"commit {h[:40]} fixes the parser",
            f"Merged {h[:7]} into main",
            f"request id {u}",
            f'"id": "{u}"',
            f"upgrade to version {r(0, 20)}.{r(0, 40)}.{r(0, 200)}",
            f"numpy=={r(1, 2)}.{r(0, 30)}.{r(0, 9)}, driver {r(400, 600)}.{r(0, 99)}.{r(0, 9)}.{r(0, 9)}",
            f"created_at: {r(1_500_000_000_000, 1_800_000_000_000)}",
            f"timestamp {r(1_500_000_000, 1_800_000_000)}",
            f"order #{r(10**15, 10**16 - 1)} shipped",
            f"order id {r(10**12, 10**13 - 1)}",
            f"md5 {hashlib.md5(str(i).encode()).hexdigest()}",
            f"{r(1000, 99999)} * {r(10, 999)} = {r(10**5, 10**8)}",
            f"at 2026-{r(1, 12):02d}-{r(1, 28):02d}T{r(0, 23):02d}:{r(0, 59):02d}:{r(0, 59):02d}Z",
        ]))  # fmt: skip
    return made


# -- the tools, each as text → kinds found ---------------------------------------------


def curate_finder() -> Finder:
    from curate.validators.pii import find_all

    return lambda text: [k for k, _, _ in find_all(text)]


def detect_secrets_finder() -> Finder:
    """detect-secrets as `detect-secrets scan` runs it: every plugin and its default filters,
    over a file holding the text (`scan_line`, its ad-hoc mode, drops the entropy limits and
    flags nearly every word)."""
    import tempfile

    from detect_secrets.core.scan import scan_file
    from detect_secrets.settings import default_settings

    folder = Path(tempfile.mkdtemp(prefix="pii-bench-"))
    path = folder / "row.txt"

    def find(text: str) -> list[str]:
        path.write_text(text, encoding="utf-8")
        with default_settings():
            found = [s.type for s in scan_file(str(path))]
        return ["ip_address" if "IP" in t else "secret" for t in found]

    return find


def presidio_finder() -> Finder:
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )

    kinds = {"EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone", "CREDIT_CARD": "credit_card",
             "IBAN_CODE": "iban", "IP_ADDRESS": "ip_address", "US_SSN": "ssn"}  # fmt: skip
    recognizers = [r() for r in (CreditCardRecognizer, EmailRecognizer, IbanRecognizer,
                                 IpRecognizer, PhoneRecognizer, UsSsnRecognizer)]  # fmt: skip

    def find(text: str) -> list[str]:
        found = []
        for r in recognizers:
            found += [kinds[x.entity_type] for x in r.analyze(text, r.supported_entities, None)]
        return found

    return find


def scrubadub_finder() -> Finder:
    import logging

    import scrubadub

    logging.getLogger("tldextract").setLevel(logging.CRITICAL)  # no network here
    logging.getLogger("filelock").setLevel(logging.CRITICAL)
    scrubber = scrubadub.Scrubber()
    kinds = {"email": "email", "phone": "phone", "credit_card": "credit_card",
             "social_security_number": "ssn", "credential": "secret"}  # fmt: skip

    def find(text: str) -> list[str]:
        return [kinds[f.type] for f in scrubber.iter_filth(text) if f.type in kinds]

    return find


# -- measures ---------------------------------------------------------------------------


def recall(find: Finder, cases: list[dict]) -> dict[str, dict]:
    """Per kind: entities found / expected (positives), negatives flagged, weak found."""
    out: dict[str, dict] = {}
    for c in cases:
        kind = CASE_KIND.get(c["kind"], c["kind"])
        found = find(c["text"])
        hits = sum(1 for k in found if k == kind or kind == "secret" and k in SECRET_KINDS)
        row = out.setdefault(c["kind"], {"expected": 0, "found": 0, "negatives": 0, "flagged": 0,
                                    "weak": 0, "weak_found": 0})  # fmt: skip
        if c["weak"]:
            row["weak"] += c["expected"]
            row["weak_found"] += min(hits, c["expected"])
        elif c["expected"]:
            row["expected"] += c["expected"]
            row["found"] += min(hits, c["expected"])
            if kind == "secret":  # per plugin test file / gitleaks rule file
                where = row.setdefault("by_source", {}).setdefault(
                    c["source"].split(":")[1], [0, 0]
                )
                where[0] += c["expected"]
                where[1] += min(hits, c["expected"])
        else:
            row["negatives"] += 1
            row["flagged"] += hits > 0
    for row in out.values():
        row["recall"] = round(row["found"] / row["expected"], 3) if row["expected"] else None
    return out


def false_positives(find: Finder, rows: list[str], kinds: set[str]) -> tuple[int, list[str]]:
    flagged = [t for t in rows if kinds & set(find(t))]
    return len(flagged), flagged[:5]


def curate_flags(families: dict[str, list[str]]) -> tuple[int, list[str], dict[str, dict]]:
    """curate over every ordinary row: rows flagged, what it flagged (in context), and per
    family the rows flagged by kind."""
    from curate.validators.pii import find_all

    flagged, examples, by_family = 0, [], {}
    for family, texts in families.items():
        kinds: dict[str, int] = {}
        for text in texts:
            found = find_all(text)
            flagged += bool(found)
            for kind, start, end in found[:1]:
                kinds[kind] = kinds.get(kind, 0) + 1
                examples.append(f"{family} {kind}: {text[max(0, start - 25) : end + 5]!r}")
        by_family[family] = kinds
    return flagged, examples, by_family


def curate_batch_rate(rows: list[str]) -> tuple[float, int]:
    """rows/s of the batch path on one core, and the rows it changed."""
    import pyarrow as pa

    from curate.validators.pii import candidates, redact_texts

    pa.set_cpu_count(1)
    redact_texts(pa.array(rows[:200], pa.string()))  # rules compiled once per process: not timed
    candidates(pa.array(rows[:10], pa.string()))
    column = pa.array(rows, pa.string())
    best = float("inf")
    for _ in range(3):  # a noisy machine: the best of three
        t0 = time.perf_counter()
        _, found = redact_texts(column)
        best = min(best, time.perf_counter() - t0)
    return len(rows) / best, len(found)


def rate(find: Finder, rows: list[str]) -> float:
    t0 = time.perf_counter()
    for t in rows:
        find(t)
    return len(rows) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=3000, help="ordinary rows the peers scan")
    args = parser.parse_args()
    cases = [json.loads(line) for line in CASES.read_text().splitlines()]
    families = ordinary_rows()
    rows = [t for texts in families.values() for t in texts]
    sample = random.Random(1).sample(rows, min(args.sample, len(rows)))
    tools = {
        "curate": (curate_finder(), set(PII_KINDS) | SECRET_KINDS),
        "detect-secrets": (detect_secrets_finder(), {"secret", "ip_address"}),
        "presidio": (presidio_finder(), set(PII_KINDS)),
        "scrubadub": (scrubadub_finder(), {"email", "phone", "credit_card", "ssn", "secret"}),
    }
    results = {}
    for name, (find, kinds) in tools.items():
        measured = recall(find, cases)
        fp, examples = false_positives(find, sample, kinds)
        results[name] = {"recall": measured, "fp_sample": fp, "fp_examples": examples,
                         "rows_per_s": rate(find, sample)}  # fmt: skip
    batch, changed = curate_batch_rate(rows)
    fp_all, examples, by_family = curate_flags(families)
    report(results, cases, len(sample), len(rows), batch, changed, fp_all, examples, by_family)


def report(results, cases, sample, total, batch, changed, fp_all, examples, by_family) -> None:
    kinds = ["secret", *[k if k != "ip_address" else "ip" for k in PII_KINDS], "ip_public"]
    names = list(results)
    print(f"recall on the peers' test cases ({len(cases)} cases; entities found / expected)")
    print(f"{'kind':<12}" + "".join(f"{n:>16}" for n in names) + f"{'entities':>10}")
    for kind in kinds:
        cells = []
        for n in names:
            r = results[n]["recall"].get(kind, {})
            cells.append(f"{r['recall']:.2f}" if r.get("recall") is not None else "—")
        expected = results["curate"]["recall"].get(kind, {}).get("expected", 0)
        print(f"{kind:<12}" + "".join(f"{c:>16}" for c in cells) + f"{expected:>10}")
    print("negative cases flagged (cases that hold nothing to find)")
    for kind in kinds:
        cells = [f"{results[n]['recall'].get(kind, {}).get('flagged', 0)}" for n in names]
        negatives = results["curate"]["recall"].get(kind, {}).get("negatives", 0)
        print(f"{kind:<12}" + "".join(f"{c:>16}" for c in cells) + f"{negatives:>10}")
    print("secrets by the peers' test file (entities found / expected): curate, detect-secrets")
    ours = results["curate"]["recall"]["secret"]["by_source"]
    theirs = results["detect-secrets"]["recall"]["secret"]["by_source"]
    shown = [f for f in sorted(ours) if f.endswith("_test.py") or f in ML_RULES]
    for f in shown:
        (e, a), (_, b) = ours[f], theirs[f]
        print(f"  {f:<28}{a:>4}/{e:<4}{b:>6}/{e}")
    weak = results["curate"]["recall"].get("ssn", {})
    print(f"Presidio's weak SSN matches (bare digits): curate {weak.get('weak_found', 0)} of "
          f"{weak.get('weak', 0)}, presidio {results['presidio']['recall']['ssn']['weak_found']}")  # fmt: skip
    print(f"\nfalse positives on {sample:,} ordinary rows (sampled from {total:,})")
    for n in names:
        fp = results[n]["fp_sample"]
        print(f"  {n:<16}{fp:>6} rows  {fp / sample:.2%}")
    print(
        f"curate on all {total:,} ordinary rows: {fp_all} flagged ({fp_all / total:.3%}); "
        f"by family {by_family}"
    )
    for e in examples:
        print(f"    {e[:120]}")
    print("\nrows per second, one core")
    fastest = max(results[n]["rows_per_s"] for n in names if n != "curate")
    for n in names:
        print(f"  {n:<16}{results[n]['rows_per_s']:>12,.0f}  (text by text, {sample:,} rows)")
    print(
        f"  {'curate batch':<16}{batch:>12,.0f}  (redact_texts over {total:,} rows; "
        f"{changed:,} changed) = {batch / fastest:.1f}x the fastest peer"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    main()
