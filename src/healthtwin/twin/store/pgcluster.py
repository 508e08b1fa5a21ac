"""A throwaway local PostgreSQL cluster (tests, benchmarks, demos): ``initdb`` + ``pg_ctl``.

Uses the server binaries of Debian's ``postgresql`` package (``/usr/lib/postgresql/N/bin``),
or whatever ``pg_ctl``/``initdb`` are on ``PATH``. PostgreSQL refuses to run as root: as
root the cluster runs as the ``postgres`` system user (created by the Debian package).
It listens on 127.0.0.1 on a free port and on a unix socket in its own temporary folder,
trusts local connections (throwaway only, never for real data) and is removed on ``stop``.

    with LocalCluster() as pg:
        store = PostgresStore(pg.url)
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any


class ClusterError(RuntimeError):
    """The local PostgreSQL cluster could not be found, installed or started."""


def _version_key(p: Path) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", p.parent.name) or [0])


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (highest Debian version first), or None."""
    env = os.environ.get("HEALTHTWIN_PG_BINDIR")
    if env and (Path(env) / "initdb").exists():
        return Path(env)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version_key)
    if debian:
        return debian[-1].parent
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    return None


def install_postgres(timeout: float = 900) -> bool:
    """Install Debian's ``postgresql`` with apt-get when running as root on Debian.

    Returns True when the binaries are present afterwards. Serialised with a file lock so
    that parallel test workers do not race for apt's lock.
    """
    if find_bindir() is not None:
        return True
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    import fcntl

    with open(os.path.join(tempfile.gettempdir(), "healthtwin-pg-install.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if find_bindir() is None:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(["apt-get", "update", "-qq"], env=env, timeout=timeout, check=False)
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"],
                env=env,
                timeout=timeout,
                check=False,
            )
    return find_bindir() is not None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """A temporary PostgreSQL cluster; ``url`` connects as superuser ``postgres``.

    ``durable=False`` (default) turns off fsync and synchronous commit: fast, and fine for
    a cluster that is deleted afterwards; ``durable=True`` keeps PostgreSQL's defaults.
    """

    def __init__(self, bindir: Path | None = None, *, durable: bool = False) -> None:
        self.bindir = bindir or find_bindir()
        if self.bindir is None:
            raise ClusterError(
                "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's "
                "`postgresql` package or set HEALTHTWIN_PG_BINDIR"
            )
        self.durable = durable
        self.dir: Path | None = None
        self.port = 0
        self._run_as: dict[str, Any] = {}

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        assert self.bindir is not None
        cmd = [str(self.bindir / args[0]), *args[1:]]
        res = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False, **self._run_as
        )
        if res.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr[-2000:]}")
        return res

    def start(self) -> str:
        """initdb + start; returns the URL."""
        self.dir = Path(tempfile.mkdtemp(prefix="healthtwin-pg-"))
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                subprocess.run(
                    ["useradd", "--system", "--no-create-home", "postgres"],
                    check=True,
                    capture_output=True,
                )
                pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._run_as = {
                "user": pw.pw_uid,
                "group": pw.pw_gid,
                "extra_groups": [],
                "env": {**os.environ, "HOME": str(self.dir), "USER": "postgres"},
                "cwd": str(self.dir),
            }
        data = self.dir / "data"
        self._run(
            "initdb",
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        opts = f"-k {self.dir} -h 127.0.0.1 -c max_connections=200"
        if not self.durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        last: Exception | None = None
        for _ in range(5):  # another process may take the free port first
            self.port = _free_port()
            try:
                self._run(
                    "pg_ctl",
                    "-D",
                    str(data),
                    "-l",
                    str(self.dir / "server.log"),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    f"{opts} -p {self.port}",
                    "start",
                )
                return self.url
            except ClusterError as exc:
                last = exc
        self.stop()
        raise ClusterError(f"could not start PostgreSQL: {last}")

    def stop(self) -> None:
        """Stop the server (immediately) and delete its folder."""
        if self.dir is None:
            return
        data = self.dir / "data"
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(ClusterError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
