"""The build report, the run report, `diff --html`, and the review app's HTTP surface."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.see import LEAK, planted_build


def facts(html: str) -> dict[str, str]:
    return dict(re.findall(r'<span data-fact="([^"]+)">([^<]*)</span>', html))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("see")
    return folder, *planted_build(folder)


def test_build_writes_a_self_contained_report_whose_numbers_are_the_manifests(
    planted, cli, tmp_path
):
    folder, _, built = planted
    store = folder / ".store"
    entry = built.manifest["report"]
    stored = (store / "objects" / entry["object"][:2] / entry["object"]).read_bytes()
    assert len(stored) == entry["bytes"]
    assert cli("verify", built.id, "--store", store).code == 0  # the report is re-hashed too
    out = tmp_path / "r.html"
    r = cli("report", built.id[:10], "--store", store, "--out", out)
    assert r.code == 0 and out.read_bytes() == stored
    html = stored.decode()
    # self-contained: nothing fetched (the only URL is SVG's namespace)
    assert re.findall(r"https?://[^\"' ]+", html) == ["http://www.w3.org/2000/svg"] * html.count(
        "<svg"
    )
    assert "<script src" not in html and "<link" not in html
    shown = cli("show", built.id, "--store", store, "--json").json()
    f = facts(html)
    c = shown["counts"]
    assert f["counts.rows_in"] == f"{c['rows_in']:,}" == "45"
    assert f["counts.rows_out"] == f"{c['rows_out']:,}"
    assert f["counts.rejected.exact_duplicate"] == "2" and f["counts.rejected.contaminated"] == "1"
    assert f["sources.a.rows_in"] == "35" and f["sources.b.rows_in"] == "10"
    assert f["splits.train.rows"] == f"{shown['splits']['train']['rows']:,}"
    assert f["contamination.gsm-toy.leaked_items"] == "1"
    share = shown["mixture"]["sources"]["a"]["realized_share_rows"]
    assert f["mixture.sources.a.realized_share_rows"] == f"{share:.1%}"
    # the views: histograms per split and source, the largest cluster, the leak's span
    assert html.count('class="chart histogram"') == 3 * len(
        {(r["split"], r["source"]) for r in built.rows}
    )
    assert "exact_duplicate · 3 rows</h3>" in html
    assert re.search(r"near_duplicate · 2 rows · jaccard 0\.\d+</h3>", html)
    assert "<mark>natalia</mark>" in html.lower() and LEAK.split()[3] in html
    assert re.search(r'<details data-reason="special_token_injection">', html)


def test_report_is_deterministic_and_optional(planted, cli, tmp_path):
    folder, config, built = planted
    again = cli("build", config, "--store", tmp_path / "other", "--json").json()
    assert again["manifest_id"] == built.id  # the report is part of the id, byte for byte
    bare = cli("build", config, "--store", tmp_path / "bare", "--no-report", "--json").json()
    assert bare["manifest_id"] != built.id
    shown = cli("show", bare["manifest_id"], "--store", tmp_path / "bare", "--json").json()
    assert shown["report"] is None
    out = tmp_path / "bare.html"
    made = cli("report", bare["manifest_id"], "--store", tmp_path / "bare", "--out", out)
    assert made.code == 0 and facts(out.read_text())["counts.rows_in"] == "45"
    mine = tmp_path / "mine.html"
    mine.write_text("my notes")
    refused = cli("report", built.id, "--store", folder / ".store", "--out", mine)
    assert refused.code == 2 and "--overwrite" in refused.err and mine.read_text() == "my notes"
    assert (
        cli("report", built.id, "--store", folder / ".store", "--out", mine, "--overwrite").code
        == 0
    )


def test_diff_html_lays_two_builds_side_by_side(planted, cli, tmp_path):
    folder, config, built = planted
    changed = config.read_text().replace("near = { threshold = 0.7 }\n", "")
    other = config.parent / "exact-only.toml"
    other.write_text(changed)
    store = folder / ".store"
    second = cli("build", other, "--store", store, "--json").json()["manifest_id"]
    out = tmp_path / "d.html"
    r = cli("diff", built.id, second, "--store", store, "--html", "--out", out)
    assert r.code == 1  # they differ
    html = out.read_text()
    assert built.id in html and second in html
    marked = re.findall(r"<tr class=changed><td>([^<]+)</td>", html)
    assert "rejected.near_duplicate" in marked and "counts.rows_in" not in marked
    assert html.count("class=pair") >= 6
    assert "dedup.near" in html  # the config key that changed


def test_run_report_shows_losses_throughput_packing_and_the_gate(tmp_path, cli):
    run = tmp_path / "run"
    run.mkdir()
    summary = {"run_id": "abcd", "manifest": "f" * 64, "device": "cpu", "steps": 3, "tokens": 300,
               "tokens_per_second": 12.5, "packing": {"efficiency": 0.97, "packs": 3}}  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))
    logs = [{"step": 0, "eval_loss": 2.0, "eval_runtime": 1.0, "time": 1.0}]
    logs += [
        {"step": s, "loss": 2.0 - s / 10, "num_tokens": 100.0 * s, "time": 1.0 + s}
        for s in (1, 2, 3)
    ]
    (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, logs)) + '\n{"torn')
    r = cli("report", run)
    assert r.code == 0
    html = (run / "report.html").read_text()
    assert html.count("<polyline") == 3  # train loss, validation loss, tokens/s
    assert html.count("<circle") == 3 + 1 + 2
    assert facts(html)["packing.efficiency"] == "0.97" and "Not gated yet" in html
    gate = {"decision": "fail", "why": ["stop: stop rate 20.7% is below 90%"],
            "suites": {"stop": {"passed": False, "why": [], "items": 8, "candidate": 0.2, "baseline": 0.9, "diff": -0.7, "interval": [-0.9, -0.4]}}}  # fmt: skip
    (run / "gate.json").write_text(json.dumps(gate))
    assert cli("report", run).code == 0  # its own report.html: curate's to replace
    html = (run / "report.html").read_text()
    assert (
        '<span class=bad data-fact="gate.decision">fail</span>' in html
        and "stop rate 20.7%" in html
    )


def _get(url: str, token: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"X-Curate-Token": token} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_review_app_needs_its_token_and_binds_loopback_only(planted):
    import inspect

    from curate import api
    from curate.review.web import Review, Server

    folder, _, built = planted
    review = Review(api.open_manifest(built.id, folder / ".store"), folder / "d.jsonl")
    assert "host" not in inspect.signature(Server).parameters  # nothing else can be asked for
    server = Server(review).start()
    try:
        assert server.sock.getsockname()[0] == "127.0.0.1"
        base = f"http://127.0.0.1:{server.port}"
        assert _get(base + "/") == 403
        assert _get(base + "/?token=wrong") == 403
        assert _get(base + "/stats") == 403
        assert _get(server.url) == 200
        assert _get(base + "/stats", review.token) == 200
        body = json.dumps({"id": "0123456789abcdef", "decision": "keep"}).encode()
        req = urllib.request.Request(f"{base}/decide?token={review.token}", body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 400 and not Path(folder / "d.jsonl").exists()
    finally:
        server.stop()


def test_review_pages_walk_the_ledger_in_order_with_and_without_search(planted):
    from curate import api
    from curate.review.browse import Browser, Filters

    folder, _, built = planted
    browser = Browser(api.open_manifest(built.id, folder / ".store"))
    try:
        ruled = sorted((r["reason"], r["id"]) for r in built.ledger if r["reason"] != "not_sampled")
        for f in (Filters(), Filters(q="ABOUT topic")):  # a search matches case-insensitively
            walked = [(r["reason"], r["id"]) for k in range(0, 9, 2) for r in browser.page(f, k, 2)]
            expected = ruled if not f.q else [
                (r["reason"], r["id"]) for r in built.ledger
                if r["reason"] != "not_sampled" and "about topic" in json.dumps(r["messages"]).lower()
            ]  # fmt: skip
            assert walked == sorted(expected) and browser.count(f) == len(expected)
            assert [browser.row(f, i)["id"] for i in range(len(expected))] == [
                i for _, i in sorted(expected)
            ]
        assert browser.row(Filters(reason="exact_duplicate"), 2) is None
        (near,) = browser.page(Filters(reason="near_duplicate"), 0)
        assert near["preview"].startswith("user: question 0 about topic 0")
    finally:
        browser.close()


def test_a_rebuild_takes_the_report_it_made_before(planted, monkeypatch, tmp_path):
    import curate.report.build
    from tests.conftest import build

    _, config, built = planted
    store = tmp_path / "store"
    assert build(config, store).id == built.id
    (entry,) = (store / "cache" / "reports").rglob("*.json")

    def refuse(manifest):
        raise AssertionError("the report was made again")

    monkeypatch.setattr(curate.report.build, "build_report", refuse)
    assert build(config, store).id == built.id
    monkeypatch.undo()
    entry.write_text('{"object": "00"}')  # a damaged entry: made again, to the same bytes
    assert build(config, store).id == built.id
    assert json.loads(entry.read_text())["record"]["object"] == built.manifest["report"]["object"]


def test_review_app_names_a_damaged_decisions_file(planted, tmp_path):
    from curate import api
    from curate.errors import UserError
    from curate.review.web import Review, Server

    folder, _, built = planted
    manifest = api.open_manifest(built.id, folder / ".store")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 3}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:1: field `decision`"):
        Review(manifest, bad)  # refused before it serves anything
    good = tmp_path / "good.jsonl"
    server = Server(Review(manifest, good)).start()
    try:
        assert _get(server.url) == 200
        good.write_text("not json\n")  # damaged while it runs: its message, not a 500
        req = urllib.request.Request(server.url)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert (
            refused.value.code == 400
            and "good.jsonl:1: not a JSON object" in refused.value.read().decode()
        )
    finally:
        server.stop()


def _ask(port: int, path: str, method: str = "GET", body: bytes | None = None, **headers) -> int:
    import http.client

    con = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        con.request(method, path, body=body, headers={"Host": f"127.0.0.1:{port}", **headers})
        return con.getresponse().status
    finally:
        con.close()


def test_review_app_refuses_foreign_hosts_origins_and_bad_numbers(planted, tmp_path):
    """DNS rebinding (another Host), a POST from another origin's page, indexes past 2^63 and
    deeply nested bodies: 403 or 400, never a 500; the decisions file as a folder, a FIFO or
    bytes that are not UTF-8: 400 (and exit 2 before serving), naming the file."""
    import os

    from curate import api
    from curate.errors import UserError
    from curate.review.web import Review, Server

    folder, _, built = planted
    manifest = api.open_manifest(built.id, folder / ".store")
    decisions = tmp_path / "d.jsonl"
    review = Review(manifest, decisions)
    server = Server(review).start()
    t, port = review.token, server.port
    keep = json.dumps({"id": built.ledger[0]["id"], "decision": "keep"}).encode()
    try:
        assert _ask(port, f"/?token={t}") == 200
        assert _ask(port, f"/?token={t}", Host=f"localhost:{port}") == 200
        assert _ask(port, f"/?token={t}", Host=f"evil.example:{port}") == 403
        assert _ask(port, f"/?token={t}", Host="127.0.0.1:1") == 403
        assert _ask(port, f"/decide?token={t}", "POST", keep, Origin="http://evil.example") == 403
        assert (
            _ask(port, f"/decide?token={t}", "POST", keep, **{"Sec-Fetch-Site": "cross-site"})
            == 403
        )
        assert not decisions.exists()
        assert (
            _ask(port, f"/decide?token={t}", "POST", keep, Origin=f"http://127.0.0.1:{port}") == 200
        )
        for query in (f"i={2**63}", f"i={2**64 + 5}", "i=-1", "i=x", f"offset={2**63}"):
            path = "/row" if query.startswith("i") else "/"
            assert _ask(port, f"{path}?token={t}&{query}") == 400, query
        assert _ask(port, f"/row?token={t}&i=999999") == 404
        deep = b'{"id":' + b"[" * 20_000 + b"]" * 20_000 + b"}"  # under the size cap
        assert _ask(port, f"/decide?token={t}", "POST", deep) == 400
        lines = decisions.read_bytes()
        decisions.unlink()
        decisions.mkdir()  # replaced by a folder
        assert _ask(port, f"/?token={t}") == 400
        decisions.rmdir()
        decisions.write_bytes(lines + b'{"id": "\xff\xfe", "decision": "keep"}\n')
        assert _ask(port, f"/?token={t}") == 400
    finally:
        server.stop()
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="fifo.jsonl: decisions file is a FIFO"):
        Review(manifest, fifo)  # refused at once, not a hang


def test_a_whole_last_decision_without_its_newline_is_kept(tmp_path):
    from curate.review.decisions import append, read

    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "a", "decision": "keep"}\n{"id": "b", "decision": "reject"}')
    assert [d.id for d in read(path)] == ["a", "b"]  # an editor saved it without the newline
    append(path, [{"id": "c", "decision": "keep"}])
    assert [d.id for d in read(path)] == ["a", "b", "c"]
    path.write_bytes(path.read_bytes() + b'{"id": "d", "deci')  # torn by a crash: cut
    append(path, [{"id": "e", "decision": "keep"}])
    assert [d.id for d in read(path)] == ["a", "b", "c", "e"]
