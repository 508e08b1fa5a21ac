"""Shared helpers of the server tests (test keys, fixture builders)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SECRET = "test-secret-" + "x" * 40  # HS256 test key, only in tests
PAT_A = "Patient/pat-a"
PAT_B = "Patient/pat-b"


def _patient(pid: str, family: str) -> dict[str, object]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": family, "given": ["T"]}]}


def _obs(oid: str, pid: str, code: str, value: float, unit: str, when: str) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
    }


def write_fixture_ndjson(folder: Path) -> None:
    """Two patients, each with observations (glucose mg/dL, heart rate)."""
    rows = [_patient("pat-a", "Alpha"), _patient("pat-b", "Beta")]
    for p in ("a", "b"):
        for i in range(3):
            rows.append(
                _obs(
                    f"obs-{p}-g{i}",
                    f"pat-{p}",
                    "2339-0",
                    100 + 10 * i,
                    "mg/dL",
                    f"2024-01-0{i + 1}T08:00:00Z",
                )
            )
        rows.append(_obs(f"obs-{p}-hr", f"pat-{p}", "8867-4", 70, "/min", "2024-01-02T08:00:00Z"))
    (folder / "two-patients.ndjson").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def on_store(client: Any, fn: Any, *args: Any) -> Any:
    """Run a store call on the server's store thread (the connection is not thread-safe)."""
    gw = client.app.state.gateway
    return client.portal.call(gw.call, fn, *args)


@contextlib.contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields the base URL
    (SSE needs a real server: the test client buffers whole responses)."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        for _ in range(500):
            if server.started:
                break
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        th.join(10)
