"""Fixtures shared by the cross-package tests (the servers: the root conftest.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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
