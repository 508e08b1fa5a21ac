"""Authorisation: cross-patient access on EVERY route, scopes, roles, audit, 429, 422."""

from __future__ import annotations

import json
import time

import pytest
from serve_helpers import PAT_A, PAT_B, auth

from healthtwin.serve.access import policy_of
from healthtwin.serve.app import api_routes

PUBLIC = {("GET", "/health"), ("GET", "/fhir/metadata")}
#: the dashboard's sign-in pages (no data; serve/dashboard.py)
PUBLIC |= {("GET", "/"), ("GET", "/login"), ("POST", "/login"), ("POST", "/logout")}
OBS_B = {
    "resourceType": "Observation",
    "id": "obs-b-new",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
    "subject": {"reference": "Patient/pat-b"},
    "effectiveDateTime": "2024-01-05T08:00:00Z",
    "valueQuantity": {
        "value": 99,
        "unit": "mg/dL",
        "system": "http://unitsofmeasure.org",
        "code": "mg/dL",
    },
}
OBS_B_OLD = {**OBS_B, "id": "obs-b-g0"}
WHATIF = {"scenarios": [{"name": "s", "hours": 1}], "start_glucose": 120}


def _case(method: str, path: str, job_b: str) -> tuple[str, dict, dict | None]:
    """A request of this route aimed at patient B: (url, query, json body)."""
    fill = {
        "{prefix}": "Patient",
        "{id}": "pat-b",
        "{job}": job_b,
        "{name}": "Patient.ndjson",
        "{vid}": "1",
    }
    url = path
    if "{rtype}" in url:
        url = url.replace("{rtype}", "Observation")
        fill["{id}"] = "obs-b-g0"
    for k, v in fill.items():
        url = url.replace(k, v)
    q: dict = {}
    body: dict | None = None
    if method == "GET" and path in (
        "/twins",
        "/ui/twins",
        "/fhir/{rtype}",
        "/fhir/$export",
        "/fhir/Patient/$export",
    ):
        q = {"patient": "pat-b"}
    if method == "POST" and path == "/fhir/{rtype}":
        body = OBS_B
    elif method == "PUT":
        body = OBS_B_OLD
    elif path.endswith("/whatif"):
        body = WHATIF
    elif method == "POST":
        body = {}
    return url, q, body


def _routes(app) -> list[tuple[str, str]]:
    out = [(m, r.path) for r in api_routes(app) for m in sorted(r.methods)]
    # nothing escapes: the walk and the OpenAPI schema list the same operations (the
    # dashboard's pages are left out of the schema, not out of the walk)
    schema = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
    documented = {(m, r.path) for r in api_routes(app) if r.include_in_schema for m in r.methods}
    assert documented == schema
    return out


def _send(client, method, url, q, body, tok, extra=None):
    headers = {**auth(tok), "Prefer": "respond-async", **(extra or {})}
    if body is not None:
        headers["Content-Type"] = "application/fhir+json"
        return client.request(method, url, params=q, content=json.dumps(body), headers=headers)
    return client.request(method, url, params=q, headers=headers)


def _job_for(client, tok) -> str:
    r = client.get("/fhir/$export", headers={**auth(tok), "Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    job = r.headers["Content-Location"].rsplit("/", 1)[1]
    for _ in range(200):
        if client.get(f"/fhir/$export-status/{job}", headers=auth(tok)).status_code == 200:
            break
        time.sleep(0.02)
    return job


def test_every_route_has_a_policy_and_public_routes_are_known(client) -> None:
    routes = api_routes(client.app)
    assert len(routes) >= 18
    for r in routes:
        pol = policy_of(r.endpoint)
        assert pol is not None, r.path
        if pol.public:
            assert {(m, r.path) for m in r.methods} <= PUBLIC, r.path


def test_patient_a_gets_403_on_patient_b_on_every_route(client, token) -> None:
    tok_a = token("patient/*.cruds", patient=PAT_A, role="admin", sub="a")
    tok_b = token("patient/*.cruds", patient=PAT_B, role="admin", sub="b")
    job_b = _job_for(client, tok_b)
    checked = 0
    for method, path in _routes(client.app):
        if (method, path) in PUBLIC:
            continue
        url, q, body = _case(method, path, job_b)
        r = _send(client, method, url, q, body, tok_a)
        assert r.status_code == 403, (method, path, r.status_code, r.text[:300])
        checked += 1
    assert checked >= 18
    # the same requests by B's own token are not refused for the compartment
    for method, path in _routes(client.app):
        if (method, path) in PUBLIC or path.endswith("/events") or method == "DELETE":
            continue
        url, q, body = _case(method, path, job_b)
        r = _send(client, method, url, q, body, tok_b)
        assert r.status_code != 403 and r.status_code < 500, (
            method,
            path,
            r.status_code,
            r.text[:300],
        )


def test_hidden_existence_for_confined_tokens(client, token) -> None:
    tok_a = token("patient/*.rs", patient=PAT_A)
    # a twin or resource that does not exist is also 403 for a confined token
    assert client.get("/twins/Patient/nobody/state", headers=auth(tok_a)).status_code == 403
    assert client.get("/fhir/Observation/nothing", headers=auth(tok_a)).status_code == 403
    admin = token("user/*.rs", role="admin")
    assert client.get("/twins/Patient/nobody/state", headers=auth(admin)).status_code == 404
    assert client.get("/fhir/Observation/nothing", headers=auth(admin)).status_code == 404


def test_search_and_list_are_filtered_to_the_compartment(client, token) -> None:
    tok_a = token("patient/*.rs", patient=PAT_A)
    r = client.get("/twins", headers=auth(tok_a))
    assert [t["twin_id"] for t in r.json()["items"]] == [PAT_A]
    r = client.get("/fhir/Observation", headers=auth(tok_a), params={"_count": 100})
    assert r.status_code == 200
    subjects = {e["resource"]["subject"]["reference"] for e in r.json()["entry"]}
    assert subjects == {PAT_A}
    admin = token("user/*.rs", role="admin")
    r = client.get(
        "/fhir/Observation", headers=auth(admin), params={"_count": 100, "code": "2339-0"}
    )
    subjects = {e["resource"]["subject"]["reference"] for e in r.json()["entry"]}
    assert subjects == {PAT_A, PAT_B}


def test_scopes_are_enforced_per_type_and_operation(client, token) -> None:
    obs_only = token("patient/Observation.rs", patient=PAT_A)
    assert client.get("/fhir/Observation/obs-a-g0", headers=auth(obs_only)).status_code == 200
    assert client.get(f"/fhir/{PAT_A}", headers=auth(obs_only)).status_code == 403
    assert client.get(f"/twins/{PAT_A}/state", headers=auth(obs_only)).status_code == 403
    # read-only scope cannot create
    r = client.post(
        "/fhir/Observation",
        content=json.dumps({**OBS_B, "id": "x1", "subject": {"reference": PAT_A}}),
        headers={**auth(obs_only), "Content-Type": "application/fhir+json"},
    )
    assert r.status_code == 403
    # a patient/ scope without a patient claim grants nothing
    no_ctx = token("patient/*.rs")
    assert client.get(f"/twins/{PAT_A}/state", headers=auth(no_ctx)).status_code == 403
    # v1 scope syntax
    v1 = token("user/*.read", role="clinician")
    assert client.get(f"/twins/{PAT_B}/state", headers=auth(v1)).status_code == 200


@pytest.mark.parametrize(
    "header",
    [None, "Basic abc", "Bearer not-a-jwt", "Bearer " + "e30.e30.sig"],
)
def test_bad_tokens_are_401(client, header) -> None:
    h = {"Authorization": header} if header else {}
    r = client.get(f"/twins/{PAT_A}/state", headers=h)
    assert r.status_code == 401
    assert "WWW-Authenticate" in r.headers
    assert r.json()["error"] == "unauthorized"


def test_expired_and_wrong_key_tokens_are_401(client) -> None:
    from serve_helpers import SECRET

    from healthtwin.serve.auth import mint_token

    expired = mint_token(SECRET, sub="x", scope="user/*.rs", ttl_s=-3600)
    assert client.get(f"/twins/{PAT_A}/state", headers=auth(expired)).status_code == 401
    other = mint_token("another-secret-" + "y" * 40, sub="x", scope="user/*.rs")
    assert client.get(f"/twins/{PAT_A}/state", headers=auth(other)).status_code == 401
    import jwt

    none_alg = jwt.encode(
        {"sub": "x", "scope": "user/*.rs", "exp": time.time() + 60}, None, algorithm="none"
    )
    assert client.get(f"/twins/{PAT_A}/state", headers=auth(none_alg)).status_code == 401


def test_roles_limit_functions_and_fields(client, token) -> None:
    researcher = token("user/*.rs", role="researcher")
    r = client.get("/twins", headers=auth(researcher), params={"kind": "patient"})
    assert r.status_code == 200
    assert all(t["name"] is None for t in r.json()["items"])
    r = client.get(f"/fhir/{PAT_A}", headers=auth(researcher))
    assert "name" not in r.json()
    assert r.json()["meta"]["security"][0]["code"] == "REDACTED"
    clin = token("user/*.rs", role="clinician")
    r = client.get("/twins", headers=auth(clin), params={"kind": "patient"})
    assert any(t["name"] for t in r.json()["items"])
    assert client.get(f"/fhir/{PAT_A}", headers=auth(clin)).json()["name"][0]["family"] == "Alpha"
    # API5: a clinician may not run a facility simulation; a patient may not run what-if
    orgs = client.get("/twins", headers=auth(clin), params={"kind": "facility"}).json()["items"]
    fac = orgs[0]["twin_id"]
    assert (
        client.post(f"/twins/{fac}/facility/simulate", json={}, headers=auth(clin)).status_code
        == 403
    )
    pat = token("patient/*.rs", patient=PAT_A)
    assert (
        client.post(f"/twins/{PAT_A}/glucose/whatif", json=WHATIF, headers=auth(pat)).status_code
        == 403
    )
    # history provenance: internal source paths only for clinical roles
    h_res = client.get(f"/twins/{PAT_A}/history", headers=auth(researcher)).json()["items"]
    h_cli = client.get(f"/twins/{PAT_A}/history", headers=auth(clin)).json()["items"]
    assert all("source" not in e["provenance"] for e in h_res)
    assert any("source" in e["provenance"] for e in h_cli)


def test_unknown_body_fields_are_422(client, token) -> None:
    tok = token("user/*.cruds", role="clinician")
    r = client.post(f"/twins/{PAT_A}/glucose/whatif", json={**WHATIF, "evil": 1}, headers=auth(tok))
    assert r.status_code == 422
    assert r.json()["error"] == "invalid"
    assert any(d["loc"][-1] == "evil" for d in r.json()["detail"])
    nested = {"scenarios": [{"name": "s", "hours": 1, "nope": 2}], "start_glucose": 120}
    assert (
        client.post(f"/twins/{PAT_A}/glucose/whatif", json=nested, headers=auth(tok)).status_code
        == 422
    )


def test_simulations_are_rate_limited_with_retry_after(client, token) -> None:
    tok = token("user/*.rs", role="clinician", sub="busy")
    # no refill while the test runs, however slow the machine (the bucket's arithmetic with a
    # clock is tested apart): burst 2, then 429
    client.app.state.services.limiter.rate = 1e-3
    codes = []
    for _ in range(4):
        r = client.post(
            f"/twins/{PAT_A}/glucose/forecast", json={"horizons_min": [30]}, headers=auth(tok)
        )
        codes.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["error"] == "rate-limited"
    assert codes[:2] == [200, 200], codes
    assert 429 in codes
    # another principal has its own bucket
    other = token("user/*.rs", role="clinician", sub="calm")
    r = client.post(
        f"/twins/{PAT_A}/glucose/forecast", json={"horizons_min": [30]}, headers=auth(other)
    )
    assert r.status_code == 200


def test_every_access_is_audited(client, token, store) -> None:
    tok_a = token("patient/*.rs", patient=PAT_A, sub="alice")
    client.get(f"/twins/{PAT_A}/history", headers=auth(tok_a))
    client.get("/fhir/Observation/obs-b-g0", headers=auth(tok_a))
    client.get("/fhir/Observation", headers=auth(tok_a), params={"patient": "pat-b"})
    client.get(f"/twins/{PAT_A}/state")
    client.portal.call(client.app.state.gateway.aclose)
    evs = [e["payload"] for e in store.events("audit.access", limit=100)]
    seen = {(e["who"], e["action"], e["outcome"], e["status"]) for e in evs}
    assert ("alice", "twin.history", "allowed", 200) in seen
    assert ("alice", "fhir.read", "denied", 403) in seen
    assert ("alice", "fhir.search", "denied", 403) in seen
    assert (None, "twin.state", "denied", 401) in seen
    denied = [e for e in evs if e["outcome"] == "denied" and e["who"] == "alice"]
    assert all(e["patient"] == PAT_A and e["reason"] for e in denied)
    assert store.verify().ok


def test_rate_limiter_token_bucket_arithmetic() -> None:
    """The bucket with an injected clock: burst, exact wait, refill, and per-key buckets."""
    from healthtwin.serve.services import RateLimiter

    lim = RateLimiter(rate=0.5, burst=2)  # one token every 2 s
    key = ("alice", "simulate")
    assert lim.take(key, now=0.0) == 0.0
    assert lim.take(key, now=0.0) == 0.0
    assert lim.take(key, now=0.0) == pytest.approx(2.0)  # empty: 1 token / 0.5 per s
    assert lim.take(key, now=1.0) == pytest.approx(1.0)  # half a token refilled
    assert lim.take(key, now=2.0) == 0.0
    assert lim.take(("bob", "simulate"), now=2.0) == 0.0  # another principal, own bucket
    assert lim.take(key, now=1000.0) == 0.0 and lim.take(key, now=1000.0) == 0.0  # capped at burst
    assert lim.take(key, now=1000.0) > 0.0
