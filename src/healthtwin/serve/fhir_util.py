"""Small FHIR helpers of the server: OperationOutcome, Bundles."""

from __future__ import annotations

from typing import Any

_ISSUE_CODE = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    409: "conflict",
    410: "deleted",
    422: "processing",
    429: "throttled",
    500: "exception",
}


def operation_outcome(status: int, detail: Any, severity: str = "error") -> dict[str, Any]:
    """An OperationOutcome for an HTTP status and a detail (text or a list of errors)."""
    items = detail if isinstance(detail, list) else [detail]
    issues = []
    for d in items:
        if isinstance(d, dict):
            loc = ".".join(str(x) for x in d.get("loc", []))
            text = f"{loc}: {d.get('msg')}" if loc else str(d.get("msg"))
        else:
            text = str(d)
        issues.append(
            {
                "severity": severity,
                "code": _ISSUE_CODE.get(status, "processing"),
                "diagnostics": text,
            }
        )
    return {"resourceType": "OperationOutcome", "issue": issues}
