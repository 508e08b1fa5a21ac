"""``healthtwin serve`` (the HTTP API) and ``healthtwin token`` (mint a bearer token)."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import click

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DEV_SCOPE = "user/*.cruds system/*.rs"


def _key_text(key_file: str | None, secret_env: str | None) -> tuple[str, str]:
    """(key, default algorithm) from a PEM/secret file or an environment variable."""
    if key_file:
        text = Path(key_file).read_text()
        if "PRIVATE KEY" in text:
            return text, ("ES256" if "EC PRIVATE" in text or "ec" in key_file.lower() else "RS256")
        return text.strip(), "HS256"
    name = secret_env or "HEALTHTWIN_JWT_SECRET"
    val = os.environ.get(name)
    if not val and os.environ.get(f"{name}_FILE"):
        val = Path(os.environ[f"{name}_FILE"]).read_text().strip()
    if not val:
        raise click.ClickException(
            f"no signing key: give --key FILE (PEM private key or HS256 secret) or set ${name}"
        )
    return val, "HS256"


def register(group: click.Group) -> None:
    @group.command()
    @click.option(
        "--store",
        "store",
        default=lambda: os.environ.get("HEALTHTWIN_STORE", "healthtwin.duckdb"),
        show_default="$HEALTHTWIN_STORE or ./healthtwin.duckdb",
        help="DuckDB store file or postgresql:// URL.",
    )
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", default=8000, show_default=True, type=int)
    @click.option(
        "--workers",
        default=1,
        show_default=True,
        type=int,
        help="Worker processes (1 on DuckDB: one process owns the file; more on PostgreSQL).",
    )
    @click.option(
        "--dev",
        is_flag=True,
        help="Local development: a random HS256 key for this run, a dev token printed; "
        "loopback only. Never on by default.",
    )
    @click.option("--log-level", default="warning", show_default=True)
    def serve(store: str, host: str, port: int, workers: int, dev: bool, log_level: str) -> None:
        """Serve twins over REST, FHIR R4, SSE (see docs/server.md)."""
        import uvicorn

        from healthtwin.serve.auth import mint_token
        from healthtwin.serve.settings import Settings

        is_pg = store.startswith(("postgresql://", "postgres://"))
        if workers > 1 and not is_pg:
            raise click.BadParameter(
                "a DuckDB store is owned by one process: use --workers 1 (or PostgreSQL)",
                param_hint="--workers",
            )
        if dev:
            if host not in LOOPBACK:
                raise click.BadParameter("--dev serves loopback only", param_hint="--host")
            secret = secrets.token_urlsafe(48)
            os.environ["HEALTHTWIN_JWT_SECRET"] = secret  # for this process and its workers
            tok = mint_token(secret, sub="dev", scope=DEV_SCOPE, role="admin", ttl_s=12 * 3600)
            click.echo(
                "DEVELOPMENT MODE: random key for this run only; do not expose.\n"
                f"  export HEALTHTWIN_TOKEN={tok}\n"
                f'  curl -H "Authorization: Bearer $HEALTHTWIN_TOKEN" '
                f"http://{host}:{port}/twins",
                err=True,
            )
        os.environ["HEALTHTWIN_STORE"] = store
        os.environ["HEALTHTWIN_DEV"] = "1" if dev else ""
        try:
            Settings.from_env(dev=dev).check()
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        shared_exports = None
        if workers > 1 and not os.environ.get("HEALTHTWIN_EXPORT_DIR"):
            # one folder for the Bulk export jobs of all workers: a status poll may reach
            # another worker than the kick-off (services.Exports)
            shared_exports = tempfile.mkdtemp(prefix="healthtwin-export-")
            os.environ["HEALTHTWIN_EXPORT_DIR"] = shared_exports
        try:
            uvicorn.run(
                "healthtwin.serve.app:app_from_env",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                log_level=log_level,
                access_log=False,
                # open SSE streams never finish by themselves: on Ctrl-C wait this long (s),
                # then cancel them and run the app's shutdown (audit flushed, store closed)
                timeout_graceful_shutdown=3,
            )
        finally:
            if shared_exports is not None:
                shutil.rmtree(shared_exports, ignore_errors=True)
                os.environ.pop("HEALTHTWIN_EXPORT_DIR", None)

    @group.command()
    @click.option("--sub", required=True, help="Who the token is for (user or client id).")
    @click.option(
        "--scope",
        "scope",
        required=True,
        help="Space-separated SMART scopes, e.g. 'patient/*.rs' or 'user/*.cruds'.",
    )
    @click.option("--patient", default=None, help="Patient context (id or Patient/id).")
    @click.option(
        "--role",
        type=click.Choice(["patient", "clinician", "operations", "researcher", "admin", "service"]),
        default=None,
    )
    @click.option("--key", "key_file", default=None, help="PEM private key or HS256 secret file.")
    @click.option("--secret-env", default=None, help="Env variable holding the HS256 secret.")
    @click.option("--alg", type=click.Choice(["HS256", "RS256", "ES256"]), default=None)
    @click.option("--ttl", default=3600, show_default=True, type=int, help="Lifetime (s).")
    @click.option("--issuer", default=lambda: os.environ.get("HEALTHTWIN_JWT_ISSUER"))
    @click.option("--audience", default=lambda: os.environ.get("HEALTHTWIN_JWT_AUDIENCE"))
    def token(
        sub: str,
        scope: str,
        patient: str | None,
        role: str | None,
        key_file: str | None,
        secret_env: str | None,
        alg: str | None,
        ttl: int,
        issuer: str | None,
        audience: str | None,
    ) -> None:
        """Mint a signed bearer token from a configured key (tests, demos)."""
        from healthtwin.serve.auth import Scope, mint_token

        bad = [s for s in scope.split() if Scope.parse(s) is None]
        if bad:
            raise click.BadParameter(f"not SMART scopes: {bad}", param_hint="--scope")
        key, default_alg = _key_text(key_file, secret_env)
        sys.stdout.write(
            mint_token(
                key,
                sub=sub,
                scope=scope,
                patient=patient,
                role=role,
                alg=alg or default_alg,
                ttl_s=ttl,
                issuer=issuer,
                audience=audience,
            )
            + "\n"
        )
