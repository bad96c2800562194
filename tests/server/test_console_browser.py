"""The web console in a real headless Chromium (Debian's ``chromium``, driven
by Playwright) against one live Waitress server with the real model and API
keys: the page loads cleanly, a chat streams into it and its stop button
frees the slot, the charts follow the requests, an admin unloads and loads
the model from the page, a wrong key is explained, and the controls are
labelled and reachable with the keyboard.

Screenshots go to ``tests/artifacts/console/`` (ignored by git; the folder
is printed at the end of the module)."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Iterator, List, Optional

import httpx
import pytest

from procs import free_port

from .conftest import MODEL_ID, REPO, LiveServer, server_config, start_server, wait_healthy

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed")
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (scripts/setup-env.sh installs it)")

ADMIN_KEY = "console-admin-key"
USER_KEY = "console-user-key"
ARTIFACTS = REPO / "tests" / "artifacts" / "console"


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory) -> Iterator[LiveServer]:
    cfg = server_config(model_path)
    cfg["logging"] = {"level": "INFO"}
    cfg["security"] = {"api_keys": [USER_KEY], "admin_api_keys": [ADMIN_KEY], "public_metrics": False}
    srv = start_server(cfg, tmp_path_factory.mktemp("console"))
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="module")
def browser() -> Iterator["sync_api.Browser"]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()
    print(f"\nconsole screenshots: {ARTIFACTS}")


class Console:
    """One browser tab on the console, with its console messages."""

    def __init__(self, browser, server: LiveServer, key: str = "", viewport: Optional[dict] = None) -> None:
        self.context = browser.new_context(viewport=viewport or {"width": 1280, "height": 860})
        if key:  # as if typed earlier in this tab: sessionStorage survives a reload
            self.context.add_init_script(f"sessionStorage.setItem('kolosal.apiKey', {json.dumps(key)})")
        self.page = self.context.new_page()
        self.errors: List[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(server.base_url + "/")

    def tab(self, name: str) -> None:
        self.page.click(f"#tab-{name}")
        self.page.wait_for_selector(f"#{name}", state="visible")

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def admin(browser, server) -> Iterator[Console]:
    c = Console(browser, server, ADMIN_KEY)
    yield c
    c.close()


def wait_until(page, expression: str, timeout: float = 30) -> None:
    """Poll a JavaScript expression until it is truthy (``page.wait_for_function`` evaluates its
    predicate with eval inside the page, which the console's CSP forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout}s: {expression}")
        time.sleep(0.05)


def api(server: LiveServer, key: str = ADMIN_KEY) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def engine_status(server: LiveServer) -> dict:
    with api(server) as c:
        return c.get(f"/engines/{MODEL_ID}/status").json()


def test_page_loads_without_errors_and_shows_the_server(admin, server):
    page = admin.page
    page.wait_for_selector(f"#engine-rows tr[data-state='loaded']")
    assert page.text_content("#health-status") == "ok"
    assert page.text_content("#key-role") == "admin key"
    row = page.locator("#engine-rows tr").first
    assert row.locator("th").text_content() == MODEL_ID
    assert row.locator("progress").get_attribute("aria-label") == f"Load progress of {MODEL_ID}"
    assert row.locator("td").nth(1).text_content().strip() == "100%"
    wait_until(page, "document.querySelector('#engine-rows tr td:nth-of-type(4)').textContent === '0 / 4'")
    assert "MiB" in page.text_content("#memory-text")
    wait_until(page, "document.getElementById('memory-note').textContent.startsWith('no budget; host RAM')")
    for name in ("Unload", "Reload"):
        assert page.get_by_role("button", name=f"{name} {MODEL_ID}").is_visible()
    assert page.is_hidden("#alert")
    # strict CSP on the page and its files
    resp = httpx.get(server.base_url + "/", headers={"Accept": "text/html"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    assert "unsafe-inline" not in resp.headers["content-security-policy"]
    assert httpx.get(server.base_url + "/console/app.js").headers["content-security-policy"]
    admin.shot("overview")
    assert admin.errors == []


def test_page_without_a_key_asks_for_one(browser, server):
    c = Console(browser, server)
    try:
        c.page.wait_for_selector("#alert", state="visible")
        assert "needs an API key" in c.page.text_content("#alert")
        assert c.errors == []  # it asked instead of failing every call
        # the page is public; the data stays behind the key
        assert httpx.get(server.base_url + "/engines").status_code == 401
        assert httpx.get(server.base_url + "/completion-metrics").status_code == 401
    finally:
        c.close()


def test_wrong_key_shows_a_clear_message(browser, server):
    c = Console(browser, server)
    try:
        page = c.page
        page.fill("#api-key", "not-a-key")
        page.click("#key-use")
        wait_until(page, "document.getElementById('alert').textContent.includes('refused')")
        text = page.text_content("#alert")
        assert "The API key was refused (401)" in text and "Incorrect API key" in text
        c.shot("wrong-key")
        # a valid key then clears it, and the key lives in sessionStorage only
        page.fill("#api-key", USER_KEY)
        page.click("#key-use")
        wait_until(page, "document.getElementById('key-role').textContent !== ''")
        assert page.text_content("#key-role") == "key accepted (not admin)"
        assert page.is_hidden("#alert")
        assert page.evaluate("sessionStorage.getItem('kolosal.apiKey')") == USER_KEY
        assert page.evaluate("localStorage.length") == 0
        assert page.evaluate("document.cookie") == ""
        page.wait_for_selector("#engine-rows tr[data-state='loaded']")
        assert not page.get_by_role("button", name=f"Unload {MODEL_ID}").is_visible()  # not an admin key
    finally:
        c.close()


def _start_chat(page, prompt: str, max_tokens: int) -> None:
    page.fill("#pg-temperature", "0")
    page.fill("#pg-max-tokens", str(max_tokens))
    page.fill("#pg-seed", "7")
    page.fill("#pg-input", prompt)
    page.click("#pg-send")


def test_chat_streams_token_by_token(admin):
    page = admin.page
    admin.tab("playground")
    page.wait_for_selector(f"#pg-model option[value='{MODEL_ID}']", state="attached")
    _start_chat(page, "Write a long story about a dragon who learns to cook.", 120)
    answer = page.locator("#transcript li.assistant .text").last
    lengths: List[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and page.get_attribute("body", "data-generating") == "true":
        lengths.append(len(answer.text_content() or ""))
        time.sleep(0.05)
    page.wait_for_selector("#transcript li.assistant[data-finish]")
    growth = sorted({n for n in lengths if n > 0})
    assert len(growth) >= 3, lengths  # the text grew over several looks, not all at once
    stats = page.text_content("#transcript li.assistant .stats")
    assert "TTFT" in stats and "tokens/s" in stats and "completion tokens" in stats, stats
    assert page.get_attribute("#transcript li.assistant", "data-finish") in ("length", "stop")
    admin.shot("playground")
    assert admin.errors == []


def test_playground_sends_its_settings(admin):
    page = admin.page
    admin.tab("playground")
    page.wait_for_selector(f"#pg-model option[value='{MODEL_ID}']", state="attached")
    page.fill("#pg-system", "You describe animals.")
    page.fill("#pg-stop", "END\nSTOP")
    page.check("#pg-json")
    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions")) as sent:
        _start_chat(page, "Describe a cat as a JSON object.", 40)
    body = sent.value.post_data_json
    assert body["model"] == MODEL_ID and body["stream"] is True
    assert body["messages"] == [{"role": "system", "content": "You describe animals."},
                                {"role": "user", "content": "Describe a cat as a JSON object."}]
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (0, 0.95, 40, 7)
    assert body["stop"] == ["END", "STOP"] and body["response_format"] == {"type": "json_object"}
    page.wait_for_selector("#transcript li.assistant[data-finish]")
    # JSON mode held (a ```json fence the chat format allows around the object is not part of the answer)
    answer = page.text_content("#transcript li.assistant .text")
    assert answer.startswith("{"), answer
    assert admin.errors == []


def test_stop_button_cancels_and_frees_the_slot(admin, server):
    page = admin.page
    admin.tab("playground")
    page.wait_for_selector(f"#pg-model option[value='{MODEL_ID}']", state="attached")
    _start_chat(page, "Count from 1 to 1000, one number per line.", 400)
    wait_until(page, "document.querySelector('#transcript li.assistant .text').textContent.length > 0")
    assert engine_status(server)["stats"]["slots_busy"] == 1
    page.click("#pg-stop-btn")
    page.wait_for_selector("#transcript li.assistant[data-finish='stopped']")
    assert "stopped" in page.text_content("#transcript li.assistant .stats")
    deadline = time.monotonic() + 10
    while engine_status(server)["stats"]["slots_busy"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine_status(server)["stats"]["slots_busy"] == 0
    assert page.is_enabled("#pg-send") and page.is_disabled("#pg-stop-btn")
    admin.tab("overview")
    wait_until(page, "document.querySelector('#engine-rows tr td:nth-of-type(4)').textContent === '0 / 4'")
    assert admin.errors == []


def _latest(page, chart: str) -> list:
    return page.evaluate(f"""() => {{
        const cap = document.getElementById('chart-{chart}-caption');
        return [...cap.querySelectorAll('.value')].map(v => v.textContent);
    }}""")


def test_charts_follow_the_requests(admin, server):
    page = admin.page
    admin.tab("metrics")
    wait_until(page, "Number(document.getElementById('chart-tokens').dataset.points) >= 1", timeout=20)
    # a quiet moment first: no tokens generated since the last refresh
    wait_until(page, "document.querySelector('#chart-tokens-caption .value').textContent.startsWith('0.0')", timeout=30)
    before = page.evaluate("document.querySelector('#chart-tokens canvas').toDataURL()")
    with api(server, USER_KEY) as c:
        for _ in range(2):
            r = c.post("/v1/chat/completions", json={"model": MODEL_ID, "max_tokens": 16, "temperature": 0,
                                                     "messages": [{"role": "user", "content": "Say hello."}]})
            assert r.status_code == 200
    wait_until(page, "parseFloat(document.querySelector('#chart-tokens-caption .value').textContent) > 0", timeout=20)
    wait_until(page, "parseFloat(document.querySelector('#chart-requests-caption .value').textContent) > 0"
               " || Number(document.getElementById('chart-requests').dataset.max) > 0", timeout=20)
    wait_until(page, "document.querySelector('#chart-ttft-caption .value').textContent !== '–'", timeout=20)
    after = page.evaluate("document.querySelector('#chart-tokens canvas').toDataURL()")
    assert after != before
    p50, p90 = _latest(page, "ttft")
    assert p50.endswith(" ms") and p90.endswith(" ms")
    cpu, ram, _gpu = _latest(page, "host")
    assert cpu.endswith(" %") and ram.endswith(" %")
    admin.shot("metrics")
    assert admin.errors == []


def test_admin_unload_and_load_from_the_page(admin, server):
    page = admin.page
    row = page.locator(f"#engine-rows tr").first
    page.wait_for_selector("#engine-rows tr[data-state='loaded']")
    page.get_by_role("button", name=f"Unload {MODEL_ID}").click()
    page.wait_for_selector("#engine-rows tr[data-state='removed']")
    assert row.locator("td").first.text_content() == "removed"
    with api(server) as c:
        assert c.get(f"/engines/{MODEL_ID}/status").status_code == 404
    admin.shot("unloaded")
    load = page.get_by_role("button", name=f"Load {MODEL_ID}")
    assert load.is_visible()
    load.click()
    page.wait_for_selector("#engine-rows tr[data-state='loaded']", timeout=60000)
    assert row.locator("td").nth(1).text_content().strip() == "100%"
    status = engine_status(server)
    assert status["status"] == "loaded" and status["progress"] == 1.0
    # the load from the page logged its progress every 10 %
    log = server.log()
    for pct in range(10, 101, 10):
        assert f"loading {MODEL_ID}: {pct}%" in log
    loads = log.count(f"loading {MODEL_ID}: 100%")
    page.get_by_role("button", name=f"Reload {MODEL_ID}").click()
    deadline = time.monotonic() + 60
    while server.log().count(f"loading {MODEL_ID}: 100%") == loads and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.log().count(f"loading {MODEL_ID}: 100%") == loads + 1  # a fresh load of the file
    page.wait_for_selector("#engine-rows tr[data-state='loaded']")
    assert engine_status(server)["status"] == "loaded"
    assert admin.errors == []


def test_admin_loads_a_registered_engine_from_the_page(admin, server, model_path):
    page = admin.page
    with api(server) as c:
        r = c.post("/engines", json={"engine_id": "second", "model_path": str(model_path), "load_immediately": False,
                                     "loading_parameters": {"n_ctx": 512, "n_parallel": 1, "n_threads": 1}})
        assert r.status_code == 201 and r.json()["status"] == "registered"
    try:
        page.wait_for_selector("#engine-rows tr[data-state='registered']")
        page.get_by_role("button", name="Load second").click()
        page.wait_for_selector("#engine-rows tr[data-state='registered']", state="detached", timeout=60000)
        wait_until(page, "[...document.querySelectorAll('#engine-rows tr')].some(tr => "
                         "tr.querySelector('th').textContent === 'second' && tr.dataset.state === 'loaded')")
        with api(server) as c:
            info = c.get("/engines/second/status").json()
        assert info["status"] == "loaded" and info["progress"] == 1.0
        assert info["loading_parameters"]["n_ctx"] == 512  # loaded with its own parameters
        # the playground's picker lists both models, and a chat goes to the one picked
        admin.tab("playground")
        page.wait_for_selector("#pg-model option[value='second']", state="attached")
        assert page.eval_on_selector_all("#pg-model option", "els => els.map(e => e.value)") == [MODEL_ID, "second"]
        page.select_option("#pg-model", "second")
        with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions")) as sent:
            _start_chat(page, "Hello", 4)
        assert sent.value.post_data_json["model"] == "second"
        page.wait_for_selector("#transcript li.assistant[data-finish]")
        assert page.get_attribute("#transcript li.assistant:last-child", "data-finish") == "length"
        page.click("#pg-clear")
        admin.tab("overview")
    finally:
        with api(server) as c:
            c.delete("/engines/second")
    wait_until(page, "![...document.querySelectorAll('#engine-rows th')].some(th => th.textContent === 'second')")
    assert admin.errors == []


def test_keyboard_reaches_labelled_controls(admin):
    page = admin.page
    page.wait_for_selector("#engine-rows tr[data-state='loaded']")

    def tab_through(n: int) -> List[str]:
        seen = []
        for _ in range(n):
            page.keyboard.press("Tab")
            seen.append(page.evaluate("document.activeElement.id || document.activeElement.getAttribute('aria-label')"
                                      " || document.activeElement.tagName"))
        return seen

    seen = tab_through(12)
    for control in ("tab-overview", "tab-metrics", "tab-playground", "api-key", "key-use", "key-forget",
                    f"Unload {MODEL_ID}", f"Reload {MODEL_ID}"):
        assert control in seen, seen
    # the focus ring is visible on a control reached by keyboard
    page.focus("#tab-playground")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.press("Enter")  # opens the playground
    page.wait_for_selector("#playground", state="visible")
    seen = tab_through(20)
    for control in ("pg-model", "pg-system", "pg-temperature", "pg-top-p", "pg-max-tokens", "pg-seed", "pg-stop",
                    "pg-json", "pg-input", "pg-send", "pg-clear"):
        assert control in seen, seen
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter(el => !((el.labels && el.labels.length) || el.getAttribute('aria-label')
                        || (el.tagName === 'BUTTON' && el.textContent.trim())))
        .map(el => el.outerHTML)""")
    assert unlabelled == []
    assert admin.errors == []



def test_narrow_window_has_no_sideways_scrolling(browser, server):
    """At a phone's width every view fits: the header wraps, the engines table
    scrolls inside its own box, the charts shrink."""
    c = Console(browser, server, ADMIN_KEY, viewport={"width": 380, "height": 800})
    try:
        c.page.wait_for_selector("#engine-rows tr[data-state='loaded']")
        for name in ("overview", "metrics", "playground"):
            c.tab(name)
            width = c.page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            c.shot(f"narrow-{name}")
            assert width[0] <= width[1], (name, width)
        assert c.errors == []
    finally:
        c.close()


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory) -> Iterator[LiveServer]:
    """No keys, no models, health and metrics turned off."""
    cfg = {"server": {"host": "127.0.0.1", "port": free_port()}, "logging": {"level": "WARNING"}, "models": [],
           "features": {"health_check": False, "metrics": False}}
    srv = start_server(cfg, tmp_path_factory.mktemp("console-bare"), wait=False)
    wait_healthy(srv, 60, path="/console/session")  # no /health here
    yield srv
    assert srv.stop() == 0, srv.log()


def test_page_with_health_and_metrics_turned_off(browser, bare_server):
    """The page asks for neither (no 404s in the browser's console), says that
    they are off, and shows no figure it cannot have."""
    c = Console(browser, bare_server)
    try:
        page = c.page
        wait_until(page, "document.getElementById('key-role').textContent !== ''")
        wait_until(page, "document.getElementById('health-status').textContent.includes('features.health_check')")
        for card in ("uptime", "inflight", "queued"):
            assert page.text_content(f"#{card}") == "–", card
        assert page.evaluate("getComputedStyle(document.getElementById('health-status')).overflow") != "hidden"
        health = page.locator("#health-status").bounding_box()
        card = page.locator("#health-status").locator("xpath=..").bounding_box()
        assert health["x"] + health["width"] <= card["x"] + card["width"], (health, card)  # no text past its card
        c.tab("metrics")
        assert page.is_visible("#metrics-off") and page.is_hidden("#charts")
        time.sleep(2.5)  # one more polling round
        c.shot("features-off")
        assert c.errors == []
    finally:
        c.close()
