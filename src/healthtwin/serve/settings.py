"""Server settings: where the store is, which keys verify tokens, limits, development mode.

Keys are never built in: they come from files or environment variables (``from_env``), or,
in development mode only (``--dev``), from a random secret generated at start-up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Configuration of one server process.

    ``store``: DuckDB file path (one worker process) or ``postgresql://`` URL (several).
    ``jwt_secret``: HS256 shared secret (bytes as text, >= 32 characters).
    ``jwt_public_keys``: PEM public keys (RSA for RS256, EC P-256 for ES256).
    ``issuer`` / ``audience``: checked when set. ``dev``: development mode (never by default).
    ``sim_rate`` / ``sim_burst``: simulations per second and burst per principal (token bucket).
    ``audit_flush_s``: the longest an audit event of a read waits before it is journaled (s).
    ``write_gather_s``: under write load, the longest a group commit waits for the writes of
    the clients answered by the last one (s; 0: never waits; ``serve.gateway``;
    ``HEALTHTWIN_WRITE_GATHER_S``). ``export_dir``: Bulk export files and job states
    (``HEALTHTWIN_EXPORT_DIR``; default a temporary folder per server).
    ``state_preload``: twins whose current state is loaded into the cache at start-up.
    ``duckdb_threads``: DuckDB's worker threads for a DuckDB store the server opens (0: DuckDB's
    default, one per core). The server's parallelism is across requests; one thread per query
    spends ~15 % less CPU per write on 2 cores (docs/PERFORMANCE.md "server").
    """

    store: str = "healthtwin.duckdb"
    jwt_secret: str | None = None
    jwt_public_keys: tuple[str, ...] = ()
    issuer: str | None = None
    audience: str | None = None
    dev: bool = False
    sim_rate: float = 0.5
    sim_burst: int = 3
    audit_flush_s: float = 0.05
    write_gather_s: float = 0.004
    export_dir: str | None = None
    base_url: str = ""
    leeway_s: int = 30
    state_preload: int = 20_000
    duckdb_threads: int = 1

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Read ``HEALTHTWIN_*`` variables; file variables name files holding the key."""
        env = os.environ
        secret = env.get("HEALTHTWIN_JWT_SECRET")
        if secret is None and env.get("HEALTHTWIN_JWT_SECRET_FILE"):
            secret = Path(env["HEALTHTWIN_JWT_SECRET_FILE"]).read_text().strip()
        keys: list[str] = []
        for p in filter(None, env.get("HEALTHTWIN_JWT_PUBLIC_KEY_FILE", "").split(os.pathsep)):
            keys.append(Path(p).read_text())
        s = cls(
            store=env.get("HEALTHTWIN_STORE", "healthtwin.duckdb"),
            jwt_secret=secret,
            jwt_public_keys=tuple(keys),
            issuer=env.get("HEALTHTWIN_JWT_ISSUER") or None,
            audience=env.get("HEALTHTWIN_JWT_AUDIENCE") or None,
            duckdb_threads=int(env.get("HEALTHTWIN_DUCKDB_THREADS", "1")),
            export_dir=env.get("HEALTHTWIN_EXPORT_DIR") or None,
            write_gather_s=float(env.get("HEALTHTWIN_WRITE_GATHER_S", "0.004")),
        )
        return replace(s, **overrides)  # type: ignore[arg-type]

    def check(self) -> None:
        """Refuse a configuration that cannot authenticate anyone, or a weak HS256 secret."""
        if self.jwt_secret is None and not self.jwt_public_keys:
            raise ValueError(
                "no token key configured: set HEALTHTWIN_JWT_SECRET(_FILE) (HS256) or "
                "HEALTHTWIN_JWT_PUBLIC_KEY_FILE (RS256/ES256), or run with --dev locally"
            )
        if self.jwt_secret is not None and len(self.jwt_secret) < 32:
            raise ValueError("HEALTHTWIN_JWT_SECRET must be at least 32 characters (HS256)")
