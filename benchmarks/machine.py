"""Where a run happened: date, CPUs, CPU model, Python, servers and library versions."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import asyncpg
from redis.asyncio import Redis

__all__ = ["describe"]

PACKAGES = (
    "redis",
    "hiredis",
    "uvloop",
    "asyncpg",
    "nats-py",
    "broadcaster",
    "channels-redis",
    "channels",
    "anyio",
    "channels-core",
    "channels-layer-redis",
    "channels-layer-postgres",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _commit() -> str | None:
    """The repository's HEAD (the library code measured), if git can tell."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip() or None


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


async def describe(redis_url: str, postgres_url: str) -> dict[str, Any]:
    """Facts about this machine and the servers, for the report's header."""
    client = Redis.from_url(redis_url)
    try:
        redis_server = (await client.info("server"))["redis_version"]
    finally:
        await client.aclose()
    connection = await asyncpg.connect(postgres_url)
    try:
        postgres_server = await connection.fetchval("SHOW server_version")
    finally:
        await connection.close()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "commit": _commit(),
        "redis_server": redis_server,
        "postgres_server": postgres_server,
        "versions": {package: _version(package) for package in PACKAGES},
    }
