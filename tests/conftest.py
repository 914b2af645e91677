"""Fixtures shared by the cross-package tests.

`redis_url` and `postgres_url` are the test servers: ``CHANNELS_TEST_REDIS_URL``
/ ``CHANNELS_TEST_POSTGRES_URL``, else the loopback defaults; if one is
unreachable outside CI, a throwaway server is started for the session (the
layers' own test helpers); in CI an unreachable server fails the run.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from channels_layer_postgres.testing import TemporaryPostgres, probe
from channels_layer_redis.testing import reachable, redis_servers

#: install(distribution_name, entry_points_lines, **module_sources) -> None
FakeDistribution = Callable[..., None]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeDistribution]:
    """Install throwaway distributions with ``channels.layers`` entry points on sys.path.

    The modules they point to are written beside them; their names must
    start with ``fake_`` so they are unloaded afterwards.
    """
    monkeypatch.syspath_prepend(str(tmp_path))

    def install(name: str, entry_points: str, **modules: str) -> None:
        dist_info = tmp_path / f"{name.replace('-', '_')}-1.0.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (dist_info / "entry_points.txt").write_text(f"[channels.layers]\n{entry_points}\n")
        for module, source in modules.items():
            (tmp_path / f"{module}.py").write_text(source)

    yield install
    for module in [m for m in sys.modules if m.startswith("fake_")]:
        del sys.modules[module]


def _unreachable(what: str, url: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the test {what} server at {url} is unreachable (CI is set: no fallback)")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("CHANNELS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    if reachable(url):
        yield url
        return
    _unreachable("Redis", url)
    with redis_servers(lambda: tmp_path_factory.mktemp("redis")) as start:
        yield start().url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    url = os.environ.get("CHANNELS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    if asyncio.run(probe(url)) is None:
        yield url
        return
    _unreachable("PostgreSQL", url)
    with TemporaryPostgres() as server:
        yield server.url
