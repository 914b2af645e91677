"""What the suite measures: each scenario's shape, message sizes and message counts.

Counts are chosen so that each measurement takes a fraction of a second on
a 2-core machine and 64 KiB messages stay well under Redis's default
32 MiB pub/sub output-buffer limit. ``--quick`` divides them (the CI smoke
run: every scenario and contender, briefly, no speed asserted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "HISTORY_QUERY",
    "HISTORY_SCENARIOS",
    "HISTORY_SUFFIX",
    "SCENARIOS",
    "SIZES",
    "Scenario",
    "size_label",
]

#: Small, medium and large messages (nominal encoded sizes in bytes).
SIZES: tuple[int, ...] = (100, 1024, 64 * 1024)

#: The history rows: every one of our layers declaring the "history" capability
#: runs again as "<name> +history", with these URL parameters, in these scenarios
#: (the TTL lets a shared server shed the runs' logs; it also trims on each publish).
HISTORY_SUFFIX = " +history"
HISTORY_QUERY = "history_size=1000&history_ttl=60"
HISTORY_SCENARIOS = frozenset(("1to1", "fanout100"))

Kind = Literal["delivery", "latency", "memory", "chat"]


def size_label(size: int) -> str:
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} B"


@dataclass(frozen=True, slots=True)
class Scenario:
    """One scenario: `id` is what ``--only`` matches; `messages` maps size -> count."""

    id: str
    title: str
    kind: Kind
    publishers: int = 1
    subscribers: int = 1
    groups: int = 1
    messages: dict[int, int] = field(default_factory=dict)
    rate: float = 0.0  # latency and chat: offered messages per second
    #: chat: (groups, subscribers) in --quick mode, instead of the full shape
    quick_shape: tuple[int, int] | None = None

    def shape(self, quick: bool) -> tuple[int, int]:
        """(groups, subscribers) of this run."""
        if quick and self.quick_shape is not None:
            return self.quick_shape
        return self.groups, self.subscribers

    def count(self, size: int, quick: bool) -> int:
        full = self.messages[size]
        return self._whole(max(10, full // 10) if quick else full, quick)

    def warmup_count(self, size: int, quick: bool) -> int:
        return self._whole(max(5, self.count(size, quick) // 10), quick)

    def _whole(self, count: int, quick: bool) -> int:
        """`count` rounded up to a multiple of the groups (each group gets as many)."""
        if self.kind == "chat":
            return count  # groups are drawn at random: no rounding
        return -(-count // self.groups) * self.groups


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "1to1",
        "1 publisher -> 1 subscriber",
        "delivery",
        messages={100: 4000, 1024: 4000, 65536: 300},
    ),
    Scenario(
        "fanout10",
        "fan-out 1 -> 10 subscribers",
        "delivery",
        subscribers=10,
        messages={100: 1500, 1024: 1500, 65536: 150},
    ),
    Scenario(
        "fanout100",
        "fan-out 1 -> 100 subscribers",
        "delivery",
        subscribers=100,
        messages={100: 400, 1024: 400, 65536: 40},
    ),
    Scenario(
        "groups100",
        "100 groups, one subscriber each, publishes round-robin over the groups",
        "delivery",
        subscribers=100,
        groups=100,
        messages={100: 4000, 1024: 4000, 65536: 300},
    ),
    Scenario(
        "publishers10",
        "10 concurrent publishers -> 1 subscriber",
        "delivery",
        publishers=10,
        messages={100: 4000, 1024: 4000, 65536: 300},
    ),
    Scenario(
        "latency",
        "publish -> receive latency, paced at 1,000 msg/s, 1 subscriber",
        "latency",
        messages={100: 300, 1024: 300, 65536: 300},
        rate=1000.0,
    ),
    Scenario(
        "chat",
        "chat: 1,000 groups of 5 subscribers, 50 publishers at 2,000 msg/s in all, "
        "each message to a random group",
        "chat",
        publishers=50,
        subscribers=5000,
        groups=1000,
        messages={100: 6000},  # 3 s at the offered rate (0.3 s with --quick)
        rate=2000.0,
        quick_shape=(50, 250),
    ),
    Scenario(
        "idle-memory",
        "memory per idle subscriber (1,000 subscribers of one group)",
        "memory",
        subscribers=1000,
        messages={100: 0},
    ),
)
