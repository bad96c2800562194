"""The web console's routes without a browser: the page and its files are
public and carry a strict CSP, /console/session tells the page what its key
may do without weakening the key check of the data calls, and
``features.console: false`` removes it all (see test_console_browser.py for
the page itself in Chromium)."""
from __future__ import annotations

from typing import Any, Dict

import pytest

from kolosal.server import create_app

ADMIN, USER = "admin-key-1", "user-key-1"


def app_with(**sections: Any):
    cfg: Dict[str, Any] = {"models": [], **sections}
    return create_app(cfg, load_models="none")


@pytest.fixture(scope="module")
def keyed():
    return app_with(security={"api_keys": [USER], "admin_api_keys": [ADMIN]},
                    inference={"model_cache_size_gb": 2}).test_client()


def get(client, path: str, **kw: Any):
    """GET and close the response (static files are streamed from an open file)."""
    r = client.get(path, **kw)
    r.get_data()
    r.close()
    return r


def bearer(key: str) -> Dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def test_page_and_files_are_public_with_a_strict_csp(keyed):
    page = get(keyed, "/", headers=BROWSER)
    assert page.status_code == 200 and page.mimetype == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "unsafe" not in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    html = page.get_data(as_text=True)
    assert "<script>" not in html and "style=" not in html  # nothing inline
    assert '<script type="module" src="console/app.js">' in html
    for name, mimetype in (("app.js", "text/javascript"), ("metrics.js", "text/javascript"), ("app.css", "text/css"),
                           ("favicon.svg", "image/svg+xml")):
        r = get(keyed, f"/console/{name}")
        assert r.status_code == 200 and r.mimetype == mimetype, name
        assert r.headers["Content-Security-Policy"] == csp
    missing = get(keyed, "/console/secrets.txt")
    assert missing.status_code == 404 and missing.get_json()["error"]["message"].startswith("Unknown endpoint")
    outside = get(keyed, "/console/..%2Fapp.py")
    assert outside.status_code in (401, 404) and b"import" not in outside.get_data()


def test_public_page_does_not_open_the_data_calls(keyed):
    for path in ("/engines", "/v1/models", "/console/session"):
        r = keyed.get(path, headers=bearer("wrong"))
        assert r.status_code == 401 and r.get_json()["error"]["code"] == "invalid_api_key", path
    assert keyed.get("/engines").status_code == 401
    assert keyed.post("/engines", json={}, headers=bearer(USER)).status_code == 403


def test_session_says_what_the_key_may_do(keyed):
    assert keyed.get("/console/session").get_json() == {"authenticated": False, "keys_required": True,
                                                        "admin": False}
    user = keyed.get("/console/session", headers=bearer(USER)).get_json()
    assert user["authenticated"] is True and user["admin"] is False
    admin = keyed.get("/console/session", headers=bearer(ADMIN)).get_json()
    assert admin["admin"] is True and admin["memory_budget_bytes"] == 2 * 2**30 and admin["version"]
    assert admin["features"] == {"health_check": True, "metrics": True}
    off = app_with(features={"metrics": False, "health_check": False}).test_client().get("/console/session")
    assert off.get_json()["features"] == {"health_check": False, "metrics": False}  # the page asks for neither


def test_session_without_keys_is_full_access():
    info = app_with().test_client().get("/console/session").get_json()
    assert info["authenticated"] is True and info["admin"] is True and info["keys_required"] is False
    assert info["memory_budget_bytes"] is None


def test_root_answers_ollamas_probe_to_programs(keyed):
    """Ollama's apps probe ``/`` for "Ollama is running"; only a client asking for HTML gets the page."""
    for headers in ({}, {"Accept": "*/*"}, {"Accept": "application/json"}, {"User-Agent": "ollama-js/0.5"}):
        r = get(keyed, "/", headers=headers)
        assert r.status_code == 200 and r.mimetype == "text/plain", headers
        assert r.get_data(as_text=True) == "Ollama is running" and "Accept" in r.headers["Vary"]
    page = get(keyed, "/", headers={"Accept": "text/html"})
    assert page.mimetype == "text/html" and "Accept" in page.headers["Vary"]
    assert get(keyed, "/", headers=BROWSER, method="HEAD").status_code == 200


def test_console_can_be_turned_off():
    client = app_with(features={"console": False}).test_client()
    for headers in ({}, BROWSER):  # only the probe is left at /
        r = get(client, "/", headers=headers)
        assert r.status_code == 200 and r.get_data(as_text=True) == "Ollama is running"
    assert client.get("/console/app.js").status_code == 404
    assert client.get("/console/session").status_code == 404


def test_console_routes_stay_out_of_the_openapi_document(keyed):
    paths = keyed.get("/openapi.json").get_json()["paths"]
    assert not any(p == "/" or p.startswith("/console") for p in paths)
