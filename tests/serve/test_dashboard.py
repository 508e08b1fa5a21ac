"""Dashboard pages over the real app and store (no browser): CSP on every response, the
login cookie and its limits, patient-level authorisation of pages, audit of page views."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from serve_helpers import PAT_A, auth

from healthtwin.serve.app import api_routes
from healthtwin.serve.dashboard import COOKIE, CSP, glucose_summary

REQUIRED = (
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
)


def _login(client: TestClient, tok: str) -> None:
    r = client.post("/login", data={"token": tok, "next": "/ui/twins"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/twins"


def test_csp_on_every_page_static_file_and_api_response(
    client: TestClient, token: Callable[..., str]
) -> None:
    assert all(d in CSP for d in REQUIRED)
    _login(client, token(role="clinician"))
    for path in (
        "/login",
        "/ui/twins",
        "/ui/twins/Patient/pat-a",
        "/ui/twins/Patient/nobody",
        "/static/common.js",
        "/static/vendor/uplot/uPlot.iife.min.js",
        "/twins",
        "/health",
        "/openapi.json",
    ):
        r = client.get(path)
        assert r.headers["content-security-policy"] == CSP, path
        assert r.headers["x-content-type-options"] == "nosniff"
        if r.headers["content-type"].startswith("text/html"):
            html = r.text
            # no inline script, handler or style: every <script> has a same-origin src
            assert not re.search(r"<script(?![^>]*\bsrc=\"/static/)", html), path
            assert not re.search(r"\son[a-z]+\s*=", html), path
            assert not re.search(r"\sstyle\s*=", html) and "<style" not in html, path
            assert not re.search(r"(src|href|action)=\"(https?:)?//", html), path


def test_static_files_have_no_eval_or_remote_fetch(client: TestClient) -> None:
    for name in ("common.js", "patient.js", "facility.js", "login.js"):
        js = client.get(f"/static/{name}").text
        assert "eval(" not in js and "new Function" not in js and "innerHTML" not in js, name
        assert "http://" not in js and "https://" not in js, name


def test_pages_without_login_redirect_and_bad_token_is_refused(client: TestClient) -> None:
    r = client.get("/ui/twins/Patient/pat-a", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=/ui/twins/Patient/pat-a"
    r = client.post("/login", data={"token": "x.y.z"}, follow_redirects=False)
    assert r.status_code == 401 and "Sign-in refused" in r.text
    assert COOKIE not in r.cookies


def test_login_cookie_is_httponly_strict_and_next_is_local(
    client: TestClient, token: Callable[..., str]
) -> None:
    r = client.post(
        "/login",
        data={"token": token(), "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/ui/twins"  # no open redirect
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    r = client.post("/login", data={"token": token(), "next": "//evil.example/ui/"})
    assert r.url.path == "/ui/twins"


def test_cookie_authorises_unsafe_methods_only_with_the_dashboard_header(
    client: TestClient, token: Callable[..., str]
) -> None:
    _login(client, token(role="clinician"))
    body = {"scenarios": [{"name": "x", "hours": 1}], "start_glucose": 120}
    r = client.post("/twins/Patient/pat-a/glucose/whatif", json=body)
    assert r.status_code == 401  # a cross-site form could send this: refused
    r = client.post(
        "/twins/Patient/pat-a/glucose/whatif", json=body, headers={"X-Healthtwin-UI": "1"}
    )
    assert r.status_code == 200 and r.json()["simulated"] is True
    r = client.post("/logout", follow_redirects=False)
    assert r.status_code == 303
    assert client.get("/twins/Patient/pat-a/state").status_code == 401


def test_patient_token_sees_only_its_own_twin_in_pages(
    client: TestClient, token: Callable[..., str]
) -> None:
    _login(client, token(scope="patient/*.rs", patient=PAT_A))
    listed = client.get("/ui/twins").text
    assert "Patient/pat-a" in listed and "pat-b" not in listed
    found = client.get("/ui/twins?search=pat-b").text
    assert "Patient/pat-b" not in found and "No twin matches." in found
    r = client.get("/ui/twins/Patient/pat-b")
    assert r.status_code == 403 and "Beta" not in r.text and "obs-b" not in r.text
    r = client.get("/ui/twins/Patient/does-not-exist")
    assert r.status_code == 403  # existence is not revealed to a confined token
    a = client.get("/ui/twins/Patient/pat-a")
    assert a.status_code == 200 and "Observation/obs-a-g2/_history/1" in a.text
    assert 'id="whatif-form"' not in a.text  # role patient: no what-if


def test_page_views_and_logins_are_audited(client: TestClient, token: Callable[..., str]) -> None:
    import time

    import orjson

    from healthtwin.serve.queries import _rows

    tok = token(sub="auditor-check", role="clinician")
    _login(client, tok)
    client.get("/ui/twins/Patient/pat-a")
    other = token(scope="patient/*.rs", patient="pat-b", sub="b-user")
    assert client.get("/ui/twins/Patient/pat-a", headers=auth(other)).status_code == 403
    gw = client.app.state.gateway  # type: ignore[attr-defined]

    def audit(action: str) -> list[dict[str, object]]:
        sql = "SELECT payload FROM journal WHERE kind = 'audit.access' AND payload LIKE ?"
        rows = client.portal.call(gw.call, _rows, gw.store, sql, [f'%"{action}"%'])  # type: ignore[union-attr]
        return [orjson.loads(r[0]) for r in rows]

    for _ in range(100):  # audit events of reads are flushed within audit_flush_s
        views = audit("ui.twin")
        if len(views) >= 2:
            break
        time.sleep(0.05)
    assert {(p["who"], p["outcome"]) for p in views} >= {
        ("auditor-check", "allowed"),
        ("b-user", "denied"),
    }
    assert any(p["who"] == "auditor-check" for p in audit("ui.login"))


def test_every_page_route_has_a_policy(client: TestClient) -> None:
    paths = {r.path for r in api_routes(client.app)}  # type: ignore[arg-type]
    assert {"/login", "/ui/twins", "/ui/twins/{prefix}/{id}", "/logout"} <= paths


@pytest.mark.parametrize(
    ("values", "alerts", "gaps"),
    [
        ([100, 65, 50, 190, 260, 120], ["very-high", "high", "urgent-low", "low"], 0),
        ([100, 190, 200, 195, 100, 60], ["low", "high"], 0),
        ([100, 110], [], 0),
    ],
)
def test_glucose_summary_thresholds(values: list[float], alerts: list[str], gaps: int) -> None:
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    rs = [(t0 + timedelta(minutes=5 * i), float(v)) for i, v in enumerate(values)]
    s = glucose_summary(rs, 24.0)
    assert [a["level"] for a in s.alerts] == alerts  # newest first
    for a in s.alerts:  # an episode: its readings, its extreme value
        run = [v for t, v in rs if a["start"] <= t <= a["end"]]
        assert a["n"] == len(run)
        assert a["value"] == (min(run) if "low" in a["level"] else max(run))
    assert len(s.gaps) == gaps and s.readings == len(values)
    rs2 = rs + [(rs[-1][0] + timedelta(minutes=40), 100.0)]
    g = glucose_summary(rs2, 24.0).gaps
    assert len(g) == 1 and g[0][1] == pytest.approx(40.0)
