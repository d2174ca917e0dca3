"""The dashboard in a real browser: headless Chromium (Debian's `chromium`
package) driven by Playwright, against the pool of the shared mining run.
Screenshots at desktop and phone sizes go to a temporary directory, or to
$HASHCOOP_SCREENSHOTS: ``HASHCOOP_SCREENSHOTS=docs/screenshots ./dev test
tests/http/test_browser.py`` refreshes the README's pictures (a test run
leaves the tracked files alone)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.http.rig import A

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("HASHCOOP_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (test extra)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian package 'chromium'; .ci/run installs it)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page_at(browser):
    contexts = []

    def make(viewport=DESKTOP, *, phone=False, javascript=True):
        ctx = browser.new_context(viewport=viewport, is_mobile=phone, has_touch=phone, java_script_enabled=javascript,
                                  device_scale_factor=2 if phone else 1)
        contexts.append(ctx)
        page = ctx.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.js_errors = errors
        return page

    yield make
    for c in contexts:
        c.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where screenshots go: $HASHCOOP_SCREENSHOTS, else a temporary directory."""
    d = Path(os.environ.get("HASHCOOP_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def shot(page, shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_pool_page_then_search_an_address(rig, page_at, shots, size):
    page = page_at(DESKTOP if size == "desktop" else PHONE, phone=size == "phone")
    page.goto(rig.public + "/")
    assert re.search(r"H/s", page.inner_text("#card-hashrate .value"))
    assert int(page.inner_text("#card-miners .value")) >= 1
    assert int(page.inner_text("#card-blocks .value").replace(",", "")) >= 2
    assert page.locator("#recent table.blocks tbody tr").count() >= 2
    page.wait_for_selector("#chart svg path.line", timeout=15000)
    assert int(page.get_attribute("#chart", "data-points")) > 0
    assert no_horizontal_scroll(page)
    shot(page, shots, f"pool-{size}")

    # a miner types their address into the search box
    page.fill("header input[name=address]", A)
    page.press("header input[name=address]", "Enter")
    page.wait_for_url(re.compile(r"/miner/" + A))
    workers = page.locator("#workers table.workers tbody tr")
    assert workers.count() == 2
    rows = {r.locator("td").nth(0).inner_text(): r.locator("td").nth(1).inner_text() for r in workers.all()}
    assert rows == {"rig1": "online", "rig2": "offline"}
    assert "H/s" in page.inner_text("#card-hashrate .value")
    assert page.inner_text("#card-best .value") not in ("", "–")
    page.wait_for_selector("#chart svg path.line", timeout=15000)
    # balance, payouts with their transaction ids, their part of each block's payout
    assert "BTC" in page.inner_text("#card-balance .value")
    payments = page.locator("#payments table.payments tbody tr")
    assert payments.count() >= 1
    assert re.fullmatch(r"[0-9a-f]{64}", payments.first.locator("td.txid").inner_text().strip())
    assert "confirmed" in payments.first.inner_text()
    parts = page.locator("#myblocks table.myblocks tbody tr")
    assert parts.count() >= 1
    assert any("credited" in t and "BTC" in t for t in parts.all_inner_texts())
    assert no_horizontal_scroll(page)
    shot(page, shots, f"miner-{size}")
    assert page.js_errors == []


def test_blocks_page(rig, page_at, shots):
    page = page_at()
    page.goto(rig.public + "/blocks")
    rows = page.locator("#blocklist table.blocks tbody tr")
    assert rows.count() >= 2
    assert {"submitted", "confirmed"} & set(page.locator("#blocklist .badge").all_inner_texts())
    shot(page, shots, "blocks-desktop")
    assert page.js_errors == []


def test_pages_update_live_without_reloading(rig, page_at):
    page = page_at()
    page.goto(rig.public + f"/miner/{A}")
    page.evaluate("window.__loaded_once = true")
    before = page.inner_text("#updated")
    # refresh_seconds is 2 in the rig: the live regions are swapped in place
    # (the page's CSP forbids eval, so poll from here rather than wait_for_function)
    for _ in range(60):
        if page.evaluate("document.body.dataset.updated") and page.inner_text("#updated") != before:
            break
        page.wait_for_timeout(250)
    else:
        pytest.fail("the page did not update itself")
    assert page.evaluate("window.__loaded_once") is True  # same document: updated in place
    assert page.js_errors == []


def test_summary_reads_without_javascript(rig, page_at):
    page = page_at(javascript=False)
    page.goto(rig.public + "/")
    for card in ("hashrate", "miners", "network", "effort", "luck", "blocks"):
        assert page.inner_text(f"#card-{card} .value").strip() not in ("", "–"), card
    # the search form works without JavaScript too (server redirect)
    page.fill("header input[name=address]", A)
    page.press("header input[name=address]", "Enter")
    page.wait_for_url(re.compile(r"/miner/" + A))
    assert page.locator("#workers table.workers tbody tr").count() == 2


def test_a_bad_address_is_explained(rig, page_at):
    page = page_at(PHONE, phone=True)
    page.goto(rig.public + "/")
    page.fill("header input[name=address]", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4")
    page.press("header input[name=address]", "Enter")
    assert "regtest" in page.inner_text(".error")
