"""The brokers' own ceilings, measured in the same run: what no client library can beat.

* Redis: ``redis-benchmark`` sending ``PUBLISH <channel> <payload>`` from one
  connection (``-c 1``), ten connections (``-c 10``) and one connection
  pipelining 32 commands deep (``-c 1 -P 32``): the server's PUBLISH rate
  with a C client and no subscriber.
* PostgreSQL: ``pgbench`` running ``SELECT pg_notify(<channel>, <payload>)``
  (one transaction each, as every contender's publish is) from one and ten
  connections: the server's NOTIFY commit rate with nobody listening.

Both go to the suite's own servers over loopback with a bounded number of
commands. A missing binary or a failure becomes the row's `error`, never a
failed run: the tools come with the servers, not with the Python packages.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from glob import glob
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio

from .measure import encoded_size
from .scenarios import size_label

__all__ = ["Limit", "measure_limits"]

#: NOTIFY payloads stop at 8000 bytes.
NOTIFY_LIMIT = 7999
_CHANNEL = "bench_limit"


@dataclass(slots=True)
class Limit:
    """One ceiling: `tool` with `setup` (its options) reached `rate` commands/s at `size`."""

    broker: str
    tool: str
    setup: str
    size: int
    rate: float | None = None
    command: str = ""
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _binary(name: str) -> str | None:
    """`name` on the PATH, or in a PostgreSQL installation's bin folder."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


async def _run(command: list[str], timeout: float) -> str:
    with anyio.fail_after(timeout):
        done = await anyio.run_process(command, check=False)
    if done.returncode != 0:
        message = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        raise RuntimeError(message[-1] if message else f"exit status {done.returncode}")
    return done.stdout.decode()


async def _redis(url: str, size: int, setup: list[str], count: int) -> Limit:
    limit = Limit("redis", "redis-benchmark", " ".join(setup), size)
    binary = _binary("redis-benchmark")
    if binary is None:
        limit.error = "redis-benchmark not found"
        return limit
    parts = urlsplit(url)
    command = [
        binary,
        *("-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379)),
        *("-n", str(count), *setup, "--csv"),
        *("PUBLISH", _CHANNEL, "x" * encoded_size(size)),
    ]
    limit.command = " ".join(command[:-1]) + f" <{size_label(size)}>"
    try:
        rows = list(csv.DictReader(io.StringIO(await _run(command, 60.0))))
        limit.rate = float(rows[-1]["rps"])
    except Exception as exc:
        limit.error = f"{type(exc).__name__}: {exc}"
    return limit


async def _postgres(url: str, size: int, clients: int, count: int) -> Limit:
    setup = f"-c {clients} -j {min(clients, 2)}"
    limit = Limit("postgres", "pgbench", setup, size)
    binary = _binary("pgbench")
    if binary is None:
        limit.error = "pgbench not found (it comes with the PostgreSQL client)"
        return limit
    if encoded_size(size) > NOTIFY_LIMIT:
        limit.error = "NOTIFY payloads stop at 8000 bytes"
        return limit
    parts = urlsplit(url)
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "notify.sql"
        payload = "x" * encoded_size(size)
        script.write_text(f"SELECT pg_notify('{_CHANNEL}', '{payload}');\n", encoding="utf-8")
        command = [
            binary,
            *("-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432)),
            *("-U", parts.username or "postgres", "-n", "-f", str(script)),
            *setup.split(),
            *("-t", str(max(1, count // clients)), (parts.path or "/postgres").lstrip("/")),
        ]
        limit.command = " ".join(command).replace(str(script), "notify.sql")
        try:
            output = await _run(command, 60.0)
            found = re.search(r"tps = ([0-9.]+)", output)
            if found is None:
                raise RuntimeError("no tps in pgbench's output")
            limit.rate = float(found.group(1))
        except Exception as exc:
            limit.error = f"{type(exc).__name__}: {exc}"
    return limit


async def measure_limits(
    sizes: list[int], quick: bool, redis_url: str, postgres_url: str
) -> list[Limit]:
    """Every ceiling at every size, one tool run after another (bounded counts)."""
    scale = 5 if quick else 1
    limits: list[Limit] = []
    for size in sizes:
        large = size >= 64 * 1024
        for setup, count in (
            (["-c", "1"], 20_000),
            (["-c", "10"], 100_000),
            (["-c", "1", "-P", "32"], 400_000),
        ):
            count = count // scale // (10 if large else 1)
            limits.append(await _redis(redis_url, size, setup, count))
        for clients, count in ((1, 10_000), (10, 40_000)):
            limits.append(await _postgres(postgres_url, size, clients, count // scale))
    for limit in limits:
        if limit.error:
            print(f"  ! {limit.tool} {limit.setup}: {limit.error}", file=sys.stderr)
    return limits
