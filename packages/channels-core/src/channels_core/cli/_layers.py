"""``channels layers``: what is installed, from where, and what it can do."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points

from ..discovery import ENTRY_POINT_GROUP, available_layers, get_layer
from ..exceptions import ChannelsError
from ..plugins import layer_capabilities


@dataclass(frozen=True, slots=True)
class LayerInfo:
    name: str
    distribution: str
    target: str
    capabilities: str
    error: str | None


def describe_layers() -> list[LayerInfo]:
    """One row per installed layer name; a broken plugin is a row with its error."""
    sources = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    rows = []
    for name in available_layers():
        entry_point = sources[name]
        dist = entry_point.dist
        distribution = f"{dist.name} {dist.version}" if dist is not None else "?"
        try:
            layer_class = get_layer(name)
        except ChannelsError as exc:
            rows.append(LayerInfo(name, distribution, entry_point.value, "", str(exc)))
            continue
        capabilities = ", ".join(sorted(layer_capabilities(layer_class))) or "-"
        target = f"{layer_class.__module__}:{layer_class.__qualname__}"
        rows.append(LayerInfo(name, distribution, target, capabilities, None))
    return rows


def format_layers(rows: list[LayerInfo]) -> str:
    table = [("NAME", "DISTRIBUTION", "CLASS", "CAPABILITIES")]
    table += [(r.name, r.distribution, r.target, r.capabilities or "BROKEN") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in table
    ]
    lines += [f"\n{r.name}: {r.error}" for r in rows if r.error]
    return "\n".join(lines)
