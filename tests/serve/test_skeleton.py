from __future__ import annotations

from serve_helpers import PAT_A, PAT_B, auth


def test_state_own_patient_and_cross_patient(client, token, store) -> None:
    tok = token("patient/*.rs", patient=PAT_A)
    r = client.get(f"/twins/{PAT_A}/state", headers=auth(tok))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["twin_id"] == PAT_A
    glucose = [v for v in body["values"] if v["code"] == "2339-0"]
    assert glucose and glucose[0]["value"] == 120.0
    r = client.get(f"/twins/{PAT_B}/state", headers=auth(tok))
    assert r.status_code == 403
    r = client.get(f"/twins/{PAT_B}/state")
    assert r.status_code == 401


def test_audit_events_for_allowed_and_denied(client, token, store) -> None:
    tok = token("patient/*.rs", patient=PAT_A, sub="alice")
    assert client.get(f"/twins/{PAT_A}/state", headers=auth(tok)).status_code == 200
    assert client.get(f"/twins/{PAT_B}/state", headers=auth(tok)).status_code == 403
    client.portal.call(client.app.state.gateway.aclose)  # flush the audit buffer
    evs = [e["payload"] for e in store.events("audit.access", limit=50)]
    outcomes = {(e["who"], e["target"], e["outcome"], e["status"]) for e in evs}
    assert ("alice", PAT_A, "allowed", 200) in outcomes
    assert ("alice", PAT_B, "denied", 403) in outcomes
