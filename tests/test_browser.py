"""The report and the review app in a real browser: headless Chromium (Debian's), driven by
Playwright. `.ci/run` installs Chromium; elsewhere these run when it is present."""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from tests.conftest import build
from tests.see import planted_build

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CURATE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# a closed network: no background fetches, no first-run work (see the machine's notes)
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no Chromium at {CHROMIUM}: .ci/run installs it")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browse")
    return folder, *planted_build(folder)


def distinct_pixels(png: bytes) -> int:
    """How many different RGB(A) pixel values a PNG screenshot holds (a blank page: 1)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, channels = 8, b"", 0, 4
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, _, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8
            channels = {2: 3, 6: 4}[colour]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride = zlib.decompress(idat), width * channels + 1
    seen: set[bytes] = set()
    for y in range(0, len(raw) // stride, 7):  # rows sampled: filtered bytes still differ
        line = raw[y * stride + 1 : (y + 1) * stride]
        seen.update(line[x : x + channels] for x in range(0, len(line), channels * 5))
    return len(seen)


def test_report_renders_in_chromium_at_desktop_and_phone_width(browser, planted):
    folder, _, built = planted
    sha = built.manifest["report"]["object"]
    page_file = folder / "report.html"
    page_file.write_bytes((folder / ".store" / "objects" / sha[:2] / sha).read_bytes())
    for width in (1280, 390):
        page = browser.new_page(viewport={"width": width, "height": 900})
        errors: list[str] = []
        page.on(
            "console", lambda m, seen=errors: seen.append(m.text) if m.type == "error" else None
        )
        page.on("pageerror", lambda e, seen=errors: seen.append(str(e)))
        page.goto(page_file.as_uri())
        assert errors == []
        assert page.locator("svg.chart").count() >= 10
        assert page.locator("svg.histogram rect").count() > 0
        assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scroll
        # a reason's examples open on a click
        details = page.locator('details[data-reason="special_token_injection"]')
        assert not details.locator(".ex").first.is_visible()
        details.locator("summary").click()
        assert "<|im_start|>" in details.locator(".ex").first.inner_text()
        assert distinct_pixels(page.screenshot(full_page=True)) > 20
        page.close()


def test_review_app_filter_decide_with_keys_reload_and_rebuild(browser, planted, tmp_path):
    from curate import api
    from curate.review.web import Review, Server

    folder, config, built = planted
    decisions = folder / "review" / "decisions.jsonl"
    near = next(r for r in built.ledger if r["reason"] == "near_duplicate")
    exact = sorted(r["id"] for r in built.ledger if r["reason"] == "exact_duplicate")
    server = Server(Review(api.open_manifest(built.id, folder / ".store"), None)).start()
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url)
        assert page.locator("#shown").inner_text().startswith("rows 1–5 of 5")  # not not_sampled
        page.select_option("select[name=reason]", "near_duplicate")  # submits the filter
        page.wait_for_url("**reason=near_duplicate**")
        assert page.locator("#shown").inner_text().startswith("rows 1–1 of 1")
        page.locator("td a").first.click()
        page.wait_for_url("**/row?**")
        assert json.loads(near["detail"])["duplicate_of"] in page.locator("#twin").inner_text()
        assert page.locator("#twin del").inner_text() == "indeed"  # the word they differ in
        page.fill("#note", "the answers differ")
        page.locator("#note").press("Escape")
        page.keyboard.press("k")  # keep: the last of this list, so the page reloads
        page.wait_for_selector("#state .decided-keep")
        # the exact duplicates: reject the first with the keyboard
        page.goto(server.url + "&reason=exact_duplicate")
        page.locator("td a").first.click()
        page.wait_for_url("**i=0**")
        page.keyboard.press("r")
        page.wait_for_url("**i=1**")  # on to the next row
        page.reload()
        page.keyboard.press("p")
        page.wait_for_url("**i=0**")
        assert page.locator("#state .decided-reject").count() == 1
        page.goto(server.url)
        verdicts = page.locator("td .decided-keep, td .decided-reject").all_inner_texts()
        assert sorted(verdicts) == ["keep", "reject"]
        assert "100.0%" in page.locator("section").nth(1).inner_text()  # near_duplicate reviewed
        assert errors == []
    finally:
        server.stop()
    written = [json.loads(line) for line in decisions.read_text().splitlines()]
    assert [(d["id"], d["decision"], d["note"]) for d in written] == [
        (near["id"], "keep", "the answers differ"),
        (exact[0], "reject", None),
    ]
    # the next build honours them (without weights, so that the mixture draws every row)
    text = config.read_text().replace("weight = 0.7\n", "").replace("weight = 0.3\n", "")
    extra = text + '\n[[overrides]]\npath = "review/decisions.jsonl"\n'
    config_with = folder / "with-overrides.toml"
    config_with.write_text(extra)
    second = build(config_with, tmp_path / "store")
    assert near["id"] in {r["id"] for r in second.rows}
    assert second.manifest["overrides"]["overridden"] == [
        {"id": near["id"], "reason": "near_duplicate"}
    ]
    assert second.manifest["overrides"]["reject"]["already_rejected"] == 1
