"""Authorisation in one place: every route declares a policy; one guard enforces it.

A route's endpoint carries an :class:`Access` policy (``@access(...)``); ``create_app``
refuses to start if any API route lacks one, and the guard (a dependency of the whole app)
does, in this order: authenticate the bearer token (401), check the role may use the
function (403, OWASP API5), check a SMART scope grants the operation on the resource type
(403), and confine a principal with patient context to that patient's compartment (403,
OWASP API1). Endpoints receive the resulting :class:`AccessContext`; searches and exports
filter with ``ctx.patient`` (a query filter, never a per-endpoint copy of the check).

Policy on existence: a principal confined to patient A gets **403 for anything outside A's
compartment, whether it exists or not** (the check is made before any lookup, or a missing
resource counts as outside), so ids of other patients cannot be probed. Principals that are
not confined get 404 for what does not exist.

Every decision, allowed or denied, becomes an ``audit.access`` journal event (who, role,
client, patient, action, path, HTTP status, outcome) written by :class:`AuditMiddleware`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from fastapi import HTTPException, Request

from healthtwin.serve.auth import AuthError, Principal, Role
from healthtwin.twin.model import Event

F = TypeVar("F", bound=Callable[..., Any])

#: the FHIR resource type a twin kind is read through (scope checks)
TWIN_RTYPE = {
    "Patient": "Patient",
    "patient": "Patient",
    "Organization": "Organization",
    "facility": "Organization",
    "cohort": "Group",
}


class Denied(HTTPException):
    """A refused request (401/403/404/429) with the reason for the audit trail."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(status_code=status, detail=reason, headers=headers)
        self.reason = reason


@dataclass(frozen=True)
class Access:
    """What a route touches.

    ``rtype``: FHIR resource type for scope checks, or ``"{twin}"`` (from the twin's kind),
    ``"{rtype}"`` (from the ``rtype`` path parameter), ``None`` (no data: public).
    ``op``: SMART permission letter (c r u d s). ``compartment``: how the patient is found:
    ``twin`` (path ``prefix``/``id``), ``resource`` (path ``rtype``/``id``; looked up),
    ``search`` (query ``patient``/``subject``; results filtered), ``none`` (no patient data;
    a confined principal is refused unless ``shared`` is true). ``roles``: who may call it.
    """

    action: str
    rtype: str | None
    op: str = "r"
    compartment: str = "none"
    roles: frozenset[Role] | None = None
    public: bool = False
    shared: bool = False
    expensive: bool = False


def access(
    action: str,
    rtype: str | None,
    op: str = "r",
    *,
    compartment: str = "none",
    roles: set[Role] | None = None,
    public: bool = False,
    shared: bool = False,
    expensive: bool = False,
) -> Callable[[F], F]:
    """Attach an access policy to an endpoint function (``expensive``: rate-limited)."""
    pol = Access(
        action,
        rtype,
        op,
        compartment,
        frozenset(roles) if roles else None,
        public,
        shared,
        expensive,
    )

    def deco(fn: F) -> F:
        fn.__healthtwin_access__ = pol  # type: ignore[attr-defined]
        return fn

    return deco


def policy_of(endpoint: Any) -> Access | None:
    return getattr(endpoint, "__healthtwin_access__", None)


@dataclass
class AccessContext:
    """The outcome of the guard, given to endpoints."""

    principal: Principal | None
    policy: Access
    rtype: str | None = None
    patient: str | None = None  # the confining patient ("Patient/<id>") or None
    target: str | None = None  # the twin or resource addressed
    notes: dict[str, Any] = field(default_factory=dict)

    def require_in_compartment(self, subject: str | None, what: str) -> None:
        """Refuse (403) data about a patient other than the confining one."""
        if self.patient is not None and subject is not None and subject != self.patient:
            raise Denied(403, f"{what} belongs to another patient's compartment")

    def can(self, rtype: str, op: str) -> bool:
        return self.principal is not None and self.principal.allows(rtype, op)


class GuardServices(Protocol):
    async def subject_of(self, rid: str) -> tuple[bool, str | None]: ...

    async def owner_of_job(self, job_id: str) -> tuple[str | None, str | None]: ...

    @property
    def limiter(self) -> Any: ...


class Guard:
    """The dependency that enforces route policies (see module docstring)."""

    def __init__(
        self, verify: Callable[[str], Principal], services: Callable[[], GuardServices]
    ) -> None:
        self._verify = verify
        self._services = services

    async def __call__(self, request: Request) -> AccessContext:
        pol = policy_of(request.scope.get("endpoint"))
        if pol is None:  # create_app forbids this; never serve an unguarded route
            raise Denied(500, "route has no access policy")
        ctx = AccessContext(None, pol)
        request.state.access = ctx
        if pol.public:
            return ctx
        ctx.principal = p = self._authenticate(request)
        if pol.roles is not None and p.role not in pol.roles:
            raise Denied(403, f"role {p.role.value!r} may not use {pol.action}")
        params = request.path_params
        rtype = pol.rtype
        if rtype == "{twin}":
            rtype = TWIN_RTYPE.get(params.get("prefix", ""), "Basic")
        elif rtype == "{rtype}":
            rtype = str(params.get("rtype", ""))
        ctx.rtype = rtype
        if rtype is not None and not p.allows(rtype, pol.op):
            raise Denied(403, f"no scope grants '{pol.op}' on {rtype} (token: {p.scope_text})")
        ctx.patient = p.patient
        comp = pol.compartment
        if comp == "twin":
            ctx.target = f"{params['prefix']}/{params['id']}"
            if p.patient is not None and ctx.target != p.patient:
                raise Denied(403, f"twin {ctx.target} is outside the token's patient compartment")
        elif comp == "resource":
            ctx.target = f"{params['rtype']}/{params['id']}"
            if p.patient is not None:
                if params["rtype"] == "Patient":
                    if ctx.target != p.patient:
                        raise Denied(403, f"{ctx.target} is outside the patient compartment")
                else:
                    exists, subject = await self._services().subject_of(ctx.target)
                    if not exists or (subject is not None and subject != p.patient):
                        raise Denied(403, f"{ctx.target} is outside the patient compartment")
        elif comp == "search":
            for name in ("patient", "subject"):
                for v in request.query_params.getlist(name):
                    ref = v if "/" in v else f"Patient/{v}"
                    if p.patient is not None and ref != p.patient:
                        raise Denied(403, f"search {name}={v} is outside the patient compartment")
        elif comp == "job":
            owner, patient = await self._services().owner_of_job(str(params.get("job", "")))
            ctx.target = f"export/{params.get('job')}"
            if owner is None and p.patient is None:
                raise Denied(404, f"no export job {params.get('job')!r}")
            if owner != p.sub or (p.patient is not None and patient != p.patient):
                raise Denied(403, "the export job belongs to another principal or compartment")
        elif comp == "none" and p.patient is not None and not pol.shared:
            raise Denied(403, f"{pol.action} is not available to a patient-context token")
        if pol.expensive:
            wait = self._services().limiter.take((p.sub, pol.action))
            if wait > 0:
                raise Denied(
                    429,
                    f"rate limit of {pol.action} reached; retry in {math.ceil(wait)} s",
                    {"Retry-After": str(max(1, math.ceil(wait)))},
                )
        return ctx

    def _authenticate(self, request: Request) -> Principal:
        h = request.headers.get("authorization")
        if not h:
            raise Denied(
                401, "missing bearer token", {"WWW-Authenticate": 'Bearer realm="healthtwin"'}
            )
        scheme, _, token = h.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Denied(401, "authorization is not a bearer token", {"WWW-Authenticate": "Bearer"})
        try:
            return self._verify(token.strip())
        except AuthError as exc:
            raise Denied(
                401, str(exc), {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            ) from None


class AuditMiddleware:
    """ASGI middleware: one ``audit.access`` event per request to a guarded route."""

    def __init__(self, app: Any, sink: Callable[[Event], None]) -> None:
        self.app = app
        self.sink = sink

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}
        t0 = time.perf_counter()

        async def send_wrap(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                self._record(scope, status["code"], t0)
            await send(message)

        try:
            await self.app(scope, receive, send_wrap)
        except Exception:
            self._record(scope, 500, t0)
            raise

    def _record(self, scope: Any, code: int, t0: float) -> None:
        state = scope.get("state") or {}
        ctx: AccessContext | None = state.get("access")
        endpoint = scope.get("endpoint")
        pol = ctx.policy if ctx is not None else policy_of(endpoint)
        if pol is None or pol.public or state.get("audited"):
            return
        state["audited"] = True
        p = ctx.principal if ctx is not None else None
        reason = state.get("denied")
        outcome = "allowed" if code < 400 else ("denied" if code in (401, 403, 429) else "failed")
        patient = (
            (
                ctx.patient
                or (
                    ctx.target if ctx and ctx.target and ctx.target.startswith("Patient/") else None
                )
            )
            if ctx
            else None
        )
        payload = {
            "who": p.sub if p else None,
            "role": p.role.value if p else None,
            "client": p.client_id if p else None,
            "patient": patient,
            "target": ctx.target if ctx else None,
            "action": pol.action,
            "method": scope.get("method"),
            "path": scope.get("path"),
            "query": scope.get("query_string", b"").decode("latin-1")[:500],
            "status": code,
            "outcome": outcome,
        }
        if reason:
            payload["reason"] = reason
        self.sink(Event("audit.access", payload, {"source": "api"}, None, None))
