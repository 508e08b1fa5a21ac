"""The dashboard in a real browser: Debian's Chromium driven by Playwright (no browser download)
against a real uvicorn server (``healthtwin serve``) on 127.0.0.1 over a real DuckDB store.

Oracles: the FHIR resources written into the store by this module (chart points must equal
them), the server's own API (what a principal may see), axe-core (accessibility) and the
browser's CSP violation reports. Screenshots go to ``artifacts/dashboard/``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_helpers import SECRET, write_fixture_ndjson

from healthtwin.demo_feed import cgm_observation, ed_census
from healthtwin.serve.auth import mint_token
from healthtwin.thread.fhir.ingest import ingest_paths
from healthtwin.twin.store.duckdb_store import DuckDBStore

CHROMIUM = os.environ.get("HEALTHTWIN_CHROMIUM", "/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
SHOTS = REPO / "artifacts" / "dashboard"
AXE_SOURCE = AXE.read_text(encoding="utf-8") if AXE.exists() else ""

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.xdist_group("browser"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
]

NOW = datetime.now(UTC).replace(microsecond=0)
#: CGM of patient A: 36 readings every 5 min up to 5 min ago, one below 70 mg/dL (an alert)
CGM_A = [
    (NOW - timedelta(minutes=5 * (36 - i)), 100.0 + 40.0 * ((i % 12) / 11.0) if i != 30 else 62.0)
    for i in range(36)
]
CGM_B = [(NOW - timedelta(minutes=5 * (10 - i)), 150.0 + i) for i in range(10)]


def _absent(pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"obs-{pid}-bp-absent",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": (NOW - timedelta(hours=1)).isoformat(),
        "dataAbsentReason": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                    "code": "not-performed",
                    "display": "Not Performed",
                }
            ]
        },
    }


@pytest.fixture(scope="session")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("dash")
    write_fixture_ndjson(d)
    rows = [cgm_observation("pat-a", f"cgm-a-{i}", t, v) for i, (t, v) in enumerate(CGM_A)]
    rows += [cgm_observation("pat-b", f"cgm-b-{i}", t, v) for i, (t, v) in enumerate(CGM_B)]
    rows += [_absent("pat-a")]
    rows += ed_census("ed-1", NOW, n_waiting=4, n_cubicles=3, seed=2)
    (d / "extra.ndjson").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    path = d / "dash.duckdb"
    with DuckDBStore(path) as st:
        ingest_paths(st, [str(d / "two-patients.ndjson"), str(d / "extra.ndjson")])
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def server(store_path: Path) -> Iterator[str]:
    """``healthtwin serve`` in its own process (real uvicorn), stopped with SIGINT."""
    port = _free_port()
    env = dict(os.environ, HEALTHTWIN_JWT_SECRET=SECRET, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "healthtwin",
            "serve",
            "--store",
            str(store_path),
            "--port",
            str(port),
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("server did not start")
        yield url
    finally:
        proc.send_signal(2)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        yield b
        b.close()


class Page:
    """A signed-in page with CSP violations and console errors recorded."""

    def __init__(self, browser: Any, url: str, token: str) -> None:
        self.url = url
        self.ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        self.ctx.add_init_script(
            "window.__csp = []; document.addEventListener('securitypolicyviolation',"
            " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
        )
        self.page = self.ctx.new_page()
        self.console: list[str] = []
        self.page.on(
            "console",
            lambda m: (
                self.console.append(f"{m.type}: {m.text}")
                if m.type in ("error", "warning")
                else None
            ),
        )
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.goto(f"{url}/login")
        self.page.fill("#token", token)
        self.page.click("#login-form button[type=submit]")
        self.page.wait_for_url("**/ui/twins")

    def go(self, path: str) -> Any:
        resp = self.page.goto(self.url + path)
        return resp

    def csp_clean(self) -> None:
        v = self.page.evaluate("window.__csp")
        bad = [
            c
            for c in self.console
            if "Content Security Policy" in c or "pageerror" in c or "404" in c
        ]
        assert v == [] and bad == [], (v, bad)

    def axe(self, name: str) -> None:
        # through the DevTools protocol (not a <script> tag, which the page's CSP rightly blocks)
        self.page.evaluate(AXE_SOURCE)
        res = self.page.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
            ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' '))}))"
        )
        serious = [v for v in res if v["impact"] in ("serious", "critical")]
        assert serious == [], f"{name}: {serious}"

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.ctx.close()


def _tok(**kw: Any) -> str:
    return mint_token(SECRET, **kw)


def test_patient_page_charts_forecast_whatif_live(server: str, browser: Any) -> None:
    clin = _tok(sub="dr-who", scope="user/*.cruds", role="clinician")
    p = Page(browser, server, clin)
    try:
        resp = p.go("/ui/twins/Patient/pat-a")
        assert resp.status == 200
        assert "default-src 'self'" in resp.headers["content-security-policy"]
        pg = p.page
        # timeline chart = the CGM values written into the store, in time order
        pg.wait_for_function("() => window.healthtwin.charts['timeline-chart'] !== undefined")
        xs, ys = pg.evaluate(
            "(() => { const d = window.healthtwin.charts['timeline-chart'].data;"
            " return [Array.from(d[0]), Array.from(d[1])]; })()"
        )
        assert xs == [t.timestamp() for t, _ in CGM_A]
        assert ys == pytest.approx([round(v, 1) for _, v in CGM_A])
        # state: canonical UCUM unit, freshness, source; the absent value flagged missing
        row = pg.locator("#state tr[data-code='99504-3']")
        assert row.locator("[data-field=unit]").inner_text().startswith("mg/dL")
        assert row.locator("[data-field=value]").inner_text() == f"{CGM_A[-1][1]:.4g}"
        assert row.locator("[data-field=age]").inner_text() in {"5 min", "6 min", "7 min"}
        assert "Observation/cgm-a-35/_history/1" in row.locator("[data-field=source]").inner_text()
        assert "missing: Not Performed" in pg.locator("#state tr[data-code='8480-6']").inner_text()
        # alert from the reading below 70 mg/dL
        assert "low 62 mg/dL" in pg.locator("#alerts").inner_text()
        # forecast runs on load: a band (low <= median <= high) after the last reading
        pg.wait_for_function("() => window.healthtwin.charts['forecast-chart'] !== undefined")
        fc = pg.evaluate(
            "(() => { const d = window.healthtwin.charts['forecast-chart'].data;"
            " return d.map(a => Array.from(a)); })()"
        )
        last = CGM_A[-1][0].timestamp()
        after = [i for i, x in enumerate(fc[0]) if x > last]
        assert [round((fc[0][i] - last) / 60) for i in after] == [15, 30, 45, 60, 90, 120]
        assert all(fc[3][i] <= fc[2][i] <= fc[4][i] for i in after)
        meta = pg.locator("#forecast-meta").inner_text()
        assert "simulated" in meta and "healthtwin-glucose-enkf" in meta and "Journal batch" in meta
        # what-if round trip: two scenarios side by side, each labelled simulated
        pg.click("#whatif-run")
        pg.wait_for_selector("#whatif-results figure >> nth=1")
        figs = pg.locator("#whatif-results figure")
        assert figs.count() == 2
        assert all("simulated" in figs.nth(i).inner_text().lower() for i in range(2))
        wi = pg.evaluate(
            "[0, 1].map(i => Array.from(window.healthtwin.charts['whatif-chart-' + i].data[1]))"
        )
        assert len(wi[0]) == len(wi[1]) == 6 * 60 // 5 + 1
        assert max(wi[1]) > max(wi[0])  # the missed bolus ends higher than the bolused meal
        p.shot("patient")
        # live: a reading ingested through the API appears without a reload
        pg.evaluate("window.__sameDocument = true")
        pg.wait_for_selector("#live-status.on")
        t_new = NOW + timedelta(seconds=30)
        obs = cgm_observation("pat-a", "cgm-a-live", t_new, 199.0)
        r = httpx.put(
            f"{server}/fhir/Observation/cgm-a-live",
            json=obs,
            headers={"Authorization": f"Bearer {clin}", "Content-Type": "application/fhir+json"},
        )
        assert r.status_code in (200, 201), r.text
        pg.wait_for_function(
            "() => document.querySelector(\"#state tr[data-code='99504-3'] [data-field=value]\")"
            ".textContent === '199'"
        )
        n = pg.evaluate("window.healthtwin.charts['timeline-chart'].data[0].length")
        assert n == len(CGM_A) + 1
        assert pg.evaluate("window.__sameDocument") is True  # no reload happened
        assert "high" in pg.locator("#alerts li").first.inner_text()  # 199 > 180: live alert
        p.shot("patient-live")
        p.axe("patient")
        p.csp_clean()
    finally:
        p.close()


def test_patient_a_sees_nothing_of_patient_b(server: str, browser: Any) -> None:
    tok_a = _tok(sub="alpha", scope="patient/*.rs", patient="pat-a")
    p = Page(browser, server, tok_a)
    try:
        pg = p.page
        listed = pg.locator("#twin-list tbody a").all_inner_texts()
        assert listed == ["Patient/pat-a"]
        resp = p.go("/ui/twins/Patient/pat-b")
        assert resp.status == 403
        text = pg.content()
        assert "Beta" not in text and "cgm-b" not in text and "150" not in text
        # the page's own credentials get nothing of B from the API either
        codes = pg.evaluate(
            "Promise.all(['/twins/Patient/pat-b/series', '/twins/Patient/pat-b/state',"
            " '/fhir/Observation?patient=Patient/pat-b', '/twins?search=pat-b']"
            ".map(u => fetch(u).then(r => r.status + ' ' + (r.status === 200 ? 'x' : ''))))"
        )
        assert codes[:3] == ["403 ", "403 ", "403 "]
        found = pg.evaluate("fetch('/twins?search=pat-b').then(r => r.json())")
        assert found["items"] == []
        sse = pg.evaluate("fetch('/twins/Patient/pat-b/events').then(r => r.status)")
        assert sse == 403
        # A's own page works, read-only (no what-if for a patient role)
        assert p.go("/ui/twins/Patient/pat-a").status == 200
        assert pg.locator("#whatif-form").count() == 0
        p.shot("patient-a-only")
        p.csp_clean()
    finally:
        p.close()


def test_twin_list_search_and_facility(server: str, browser: Any) -> None:
    ops = _tok(sub="ops", scope="user/*.rs", role="operations")
    p = Page(browser, server, ops)
    try:
        pg = p.page
        # keyboard: the first Tab reaches the skip link, Enter moves focus to the content,
        # the next Tabs walk the page's controls in order
        pg.keyboard.press("Tab")
        assert pg.evaluate("document.activeElement.className") == "skip"
        pg.keyboard.press("Enter")
        assert pg.evaluate("document.activeElement.id") == "main"
        pg.keyboard.press("Tab")
        assert pg.evaluate("document.activeElement.id") == "search"
        pg.keyboard.type("Alpha")
        pg.keyboard.press("Enter")
        pg.wait_for_url("**/ui/twins?search=Alpha*")
        assert pg.locator("#twin-list tbody a").all_inner_texts() == ["Patient/pat-a"]
        pg.fill("#search", "Alpha")
        pg.click("form.search button")
        pg.wait_for_url("**/ui/twins?search=Alpha*")
        assert pg.locator("#twin-list tbody a").all_inner_texts() == ["Patient/pat-a"]
        p.axe("twin list")
        p.shot("twins")
        assert p.go("/ui/twins/Organization/ed-1").status == 200
        census = pg.locator("#census tbody tr").all_inner_texts()
        assert sum(int(r.split("\t")[2]) for r in census) == 7  # 4 waiting + 3 in cubicles
        pg.wait_for_function("() => window.healthtwin.charts['ffc-chart'] !== undefined")
        d = pg.evaluate("window.healthtwin.charts['ffc-chart'].data.map(a => Array.from(a))")
        assert d[0] == [1, 2, 4, 8, 12, 24]
        assert all(lo <= m <= hi for m, lo, hi in zip(d[1], d[2], d[3], strict=True))
        pg.fill("#cmp-days", "1")
        pg.click("#cmp-run")
        pg.wait_for_function("() => !document.querySelector('#cmp-run').disabled")
        assert pg.locator("#cmp-meta .error").count() == 0, pg.locator("#cmp-meta").inner_text()
        assert pg.locator("#cmp-table tbody tr").count() > 5
        assert "simulated" in pg.locator("#cmp-meta").inner_text()
        p.shot("facility")
        p.axe("facility")
        p.csp_clean()
    finally:
        p.close()


def test_login_refuses_bad_token_and_sets_strict_cookie(server: str, browser: Any) -> None:
    ctx = browser.new_context()
    try:
        pg = ctx.new_page()
        assert pg.goto(server + "/ui/twins").url.startswith(server + "/login")
        pg.fill("#token", "not-a-token")
        pg.click("#login-form button[type=submit]")
        assert "Sign-in refused" in pg.locator(".error").inner_text()
        pg.fill("#token", _tok(sub="dr", scope="user/*.rs", role="clinician"))
        pg.click("#login-form button[type=submit]")
        pg.wait_for_url("**/ui/twins")
        (c,) = [c for c in ctx.cookies() if c["name"] == "healthtwin_token"]
        assert c["httpOnly"] and c["sameSite"] == "Strict"
        assert pg.evaluate("document.cookie") == ""  # not readable by scripts
        # the cookie alone does not authorise a POST (needs the dashboard's header)
        st = pg.evaluate(
            "fetch('/twins/Patient/pat-a/glucose/forecast', {method: 'POST',"
            " headers: {'Content-Type': 'application/json'}, body: '{}'}).then(r => r.status)"
        )
        assert st == 401
    finally:
        ctx.close()


def teardown_module() -> None:
    # keep screenshots; nothing else to clean (tmp dirs belong to pytest)
    if SHOTS.exists() and not any(SHOTS.iterdir()):
        shutil.rmtree(SHOTS)
