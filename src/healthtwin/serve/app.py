"""The healthtwin HTTP server: ``create_app(settings)`` builds the FastAPI application.

One worker process on DuckDB (a DuckDB file has one read-write process; every store call runs
on the gateway's single store thread, the event loop stays free); several on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from healthtwin import __version__
from healthtwin.serve.access import AuditMiddleware, Denied, Guard, policy_of
from healthtwin.serve.auth import TokenVerifier
from healthtwin.serve.gateway import StoreGateway
from healthtwin.serve.models import Error
from healthtwin.serve.settings import Settings
from healthtwin.twin.store.base import Store

ERROR_KINDS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "too-large",
    415: "unsupported-media-type",
    422: "invalid",
    429: "rate-limited",
    500: "server-error",
    503: "unavailable",
}

#: documented error responses of every guarded route
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Error, "description": "missing, expired or invalid bearer token"},
    403: {"model": Error, "description": "scope, role or patient compartment forbids it"},
    422: {"model": Error, "description": "invalid parameters or body (unknown fields included)"},
}


def open_store(target: str) -> Store:
    """A DuckDB file path, or a ``postgresql://`` URL (through the store package's factory)."""
    if target.startswith(("postgresql://", "postgres://")):
        try:
            from healthtwin.twin.store import open_store as factory  # type: ignore[attr-defined]
        except ImportError as exc:
            raise ValueError(
                f"store {target!r}: this build has no PostgreSQL backend (open_store)"
            ) from exc
        store: Store = factory(target)
        return store
    from healthtwin.twin.store.duckdb_store import DuckDBStore

    return DuckDBStore(target)


def _error_body(request: Request, status: int, detail: Any) -> Response:
    if request.url.path.startswith(("/ui/", "/login")) and request.method == "GET":
        from healthtwin.serve.dashboard import error_page

        return error_page(request, status, detail)
    if request.url.path.startswith("/fhir"):
        from healthtwin.serve.fhir_util import operation_outcome

        return JSONResponse(
            operation_outcome(status, detail),
            status_code=status,
            media_type="application/fhir+json",
        )
    return JSONResponse(
        {"error": ERROR_KINDS.get(status, "error"), "detail": detail}, status_code=status
    )


def create_app(
    settings: Settings, store: Store | None = None, *, own_process: bool = False
) -> FastAPI:
    """Build the app. ``store``: an open store to serve (tests); else ``settings.store``.

    ``own_process``: the app is the whole process (``healthtwin serve``): once the state
    cache is preloaded, the objects alive then are frozen out of the cyclic garbage
    collector (``gc.freeze``), whose full collections otherwise stall every request for
    60-90 ms about once a second under write load (measured: docs/PERFORMANCE.md "server").
    """
    settings.check()
    verifier = TokenVerifier(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = store is None
        st = open_store(settings.store) if store is None else store
        if own and settings.duckdb_threads > 0 and hasattr(st, "path"):
            from healthtwin.twin.store.duckdb_store import DuckDBStore

            if isinstance(st, DuckDBStore):  # the whole database instance (reader connections)
                st.con.execute(f"SET threads = {int(settings.duckdb_threads)}")
        gw = StoreGateway(
            st,
            audit_flush_s=settings.audit_flush_s,
            gather_s=settings.write_gather_s,
            reader=_reader_factory(st),
        )
        app.state.gateway = gw
        from healthtwin.serve.services import Services

        app.state.services = Services(settings, gw)
        await app.state.services.start()
        settle = (
            asyncio.create_task(_freeze_after_preload(app.state.services)) if own_process else None
        )
        try:
            yield
        finally:
            if settle is not None:
                settle.cancel()
                with contextlib.suppress(BaseException):
                    await settle
            try:
                await app.state.services.stop()
                await gw.aclose()
                if own:
                    st.close()
            finally:
                if settle is not None:
                    # back to the collector: frozen objects are never freed at interpreter
                    # exit (and DuckDB's bindings then report its type objects as leaked)
                    gc.unfreeze()

    app = FastAPI(
        title="healthtwin",
        version=__version__,
        description=(
            "Healthcare digital twins over REST and FHIR R4. Bearer tokens (JWT) with "
            "SMART-on-FHIR v2 scopes; see docs/server.md."
        ),
        lifespan=lifespan,
        dependencies=[Depends(_guard)],
        responses=ERRORS,
    )

    app.state.guard = Guard(verifier.verify, lambda: app.state.services)
    app.state.settings = settings
    app.state.verifier = verifier

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc, Denied):
            request.state.denied = exc.reason
        resp = _error_body(request, exc.status_code, exc.detail)
        for k, v in (exc.headers or {}).items():
            resp.headers[k] = v
        return resp

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errs = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        return _error_body(request, 422, errs)

    from healthtwin.serve.routes import events, fhir, twins

    app.include_router(twins.router)
    app.include_router(events.router)
    app.include_router(fhir.router)
    from healthtwin.serve import dashboard

    dashboard.install(app)  # pages, static files, cookie auth, CSP (after the API routes)

    @app.get("/health", tags=["meta"])
    async def health() -> dict[str, str]:
        """Liveness (no data, no token)."""
        return {"status": "ok", "version": __version__}

    health.__healthtwin_access__ = _public("health")  # type: ignore[attr-defined]

    unguarded = [
        f"{sorted(r.methods or [])} {r.path}"
        for r in api_routes(app)
        if policy_of(r.endpoint) is None
    ]
    if unguarded:
        raise RuntimeError(f"routes without an access policy: {unguarded}")
    app.add_middleware(AuditMiddleware, sink=lambda ev: _audit_sink(app, ev))
    return app


def _reader_factory(store: Store) -> Any:
    """How to open more connections to the same store for the reader threads, if possible."""
    path = getattr(store, "path", None)
    url = getattr(store, "url", None)
    if isinstance(url, str) and url.startswith(("postgresql://", "postgres://")):
        return lambda: open_store(url)
    if isinstance(path, str) and path != ":memory:" and not path.startswith(":"):
        from healthtwin.twin.store.duckdb_store import DuckDBStore

        if isinstance(store, DuckDBStore):
            # same process, same database instance: DuckDB shares it between connections
            return lambda: DuckDBStore(path)
    return None


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every API route of the app, included routers walked (FastAPI >= 0.16x nests them)."""
    out: list[APIRoute] = []

    def walk(routes: list[Any]) -> None:
        for r in routes:
            if isinstance(r, APIRoute):
                out.append(r)
            inner = getattr(r, "original_router", None)
            if inner is not None:
                walk(list(inner.routes))

    walk(list(app.routes))
    return out


def _public(action: str) -> Any:
    from healthtwin.serve.access import Access

    return Access(action, None, public=True)


def _audit_sink(app: FastAPI, ev: Any) -> None:
    gw: StoreGateway | None = getattr(app.state, "gateway", None)
    if gw is not None:
        gw.audit(ev)


async def _guard(request: Request) -> None:
    await request.app.state.guard(request)


async def _freeze_after_preload(services: Any) -> None:
    """Wait for the state preload, then move every live object to the GC's permanent
    generation: later full collections scan only what was allocated since."""
    preload = getattr(services, "_preload", None)
    if preload is not None:
        with contextlib.suppress(Exception):
            await asyncio.shield(preload)
    gc.collect()
    gc.freeze()


def app_from_env() -> FastAPI:
    """The uvicorn factory of ``healthtwin serve`` (settings from ``HEALTHTWIN_*``)."""
    import os

    return create_app(
        Settings.from_env(dev=bool(os.environ.get("HEALTHTWIN_DEV"))), own_process=True
    )
