"""Runs scenarios against contenders: warm-up, interleaved repetitions, one record per run.

For each scenario and message size, every contender first runs a short
warm-up, then the repetitions go round-robin over the contenders (rep 1 of
each, rep 2 of each, ...), so that a noisy moment hits everyone alike and
the per-repetition ratios stay meaningful. `benchmarks.run` interleaves the
client setups the same way: repetition i of every contender in every setup
runs before repetition i + 1 of any. Each run opens a fresh session
and a fresh group name; connecting is never timed.
"""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .contenders import Contender
from .measure import (
    encoded_size,
    measure_chat,
    measure_delivery,
    measure_idle_memory,
    measure_latency,
)
from .redis_stats import RedisProbe
from .scenarios import Scenario, size_label

__all__ = ["Cell", "RunSettings", "plan_cells", "repetitions", "run_repetition"]


@dataclass(frozen=True, slots=True)
class RunSettings:
    quick: bool
    repeat: int
    redis_url: str
    timeout: float = 60.0


@dataclass(slots=True)
class Cell:
    """Every repetition of one contender in one scenario at one size."""

    scenario: str
    size: int
    contender: str
    kind: str
    broker: str
    reps: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "size": self.size,
            "contender": self.contender,
            "kind": self.kind,
            "broker": self.broker,
            "reps": self.reps,
            "skipped": self.skipped,
            "error": self.error,
        }


def _group(scenario: Scenario, contender: Contender) -> str:
    slug = contender.name.replace(" ", "-")
    return f"bench.{scenario.id}.{slug}.{uuid.uuid4().hex[:8]}"


async def _measure_once(
    scenario: Scenario,
    contender: Contender,
    size: int,
    count: int,
    settings: RunSettings,
) -> dict[str, Any]:
    group = _group(scenario, contender)
    async with contender.open() as session:
        if scenario.kind == "delivery":
            probe = None
            fan_out = scenario.subscribers > 1 and scenario.groups == 1
            if contender.broker == "redis" and fan_out and not contender.history:
                probe = RedisProbe(settings.redis_url, contender.broker_channel)
            try:
                delivery = await measure_delivery(
                    session,
                    group,
                    publishers=scenario.publishers,
                    subscribers=scenario.subscribers,
                    messages=count,
                    size=size,
                    timeout=settings.timeout,
                    probe=probe,
                    groups=scenario.groups,
                )
            finally:
                if probe is not None:
                    await probe.__aexit__(None, None, None)
            return {
                "events_per_second": delivery.events_per_second,
                "messages_per_second": delivery.published / delivery.seconds,
                "seconds": delivery.seconds,
                "messages": delivery.published,
                "delivered": delivery.delivered,
                "cpu_us_per_message": delivery.cpu_seconds / delivery.published * 1e6,
                "cpu_share": delivery.cpu_seconds / delivery.seconds,
                "server": delivery.server,
            }
        if scenario.kind == "chat":
            groups, subscribers = scenario.shape(settings.quick)
            chat = await measure_chat(
                session,
                group,
                groups=groups,
                subscribers=subscribers,
                publishers=scenario.publishers,
                messages=count,
                rate=scenario.rate,
                size=size,
                timeout=settings.timeout,
            )
            return {
                "groups": groups,
                "subscribers": subscribers,
                "offered_rate": chat.offered_rate,
                "published_rate": chat.published / chat.publish_seconds,
                "events_per_second": chat.events_per_second,
                "messages": chat.published,
                "delivered": chat.delivered,
                "seconds": chat.seconds,
                "p50_ms": chat.latency.quantile_ms(0.50),
                "p99_ms": chat.latency.quantile_ms(0.99),
                "cpu_us_per_event": chat.cpu_seconds / chat.delivered * 1e6,
                "cpu_share": chat.cpu_seconds / chat.seconds,
            }
        if scenario.kind == "latency":
            latency = await measure_latency(
                session,
                group,
                messages=count,
                rate=scenario.rate,
                size=size,
                timeout=settings.timeout,
            )
            return {
                "p50_ms": latency.quantile_ms(0.50),
                "p99_ms": latency.quantile_ms(0.99),
                "max_ms": latency.quantile_ms(1.0),
                "samples": len(latency.samples),
            }
        subscribers = 50 if settings.quick else scenario.subscribers
        memory = await measure_idle_memory(
            session, group, subscribers=subscribers, timeout=settings.timeout
        )
        return {
            "subscribers": memory.subscribers,
            "bytes_per_subscriber": memory.bytes_per_subscriber,
        }


def plan_cells(
    scenario: Scenario, size: int, contenders: list[Contender]
) -> list[tuple[Cell, Contender]]:
    """A cell per contender for one scenario and size, marked skipped where it cannot run."""
    planned = []
    for contender in contenders:
        if contender.scenarios is not None and scenario.id not in contender.scenarios:
            continue
        cell = Cell(scenario.id, size, contender.name, contender.kind, contender.broker)
        limit = contender.max_payload
        if scenario.kind != "memory" and limit is not None and encoded_size(size) > limit:
            cell.skipped = f"cannot carry {size_label(size)}: NOTIFY payloads stop at 8000 bytes"
        elif scenario.publishers > 1 and contender.no_concurrent_publish:
            cell.skipped = contender.no_concurrent_publish
        elif scenario.kind == "chat" and contender.no_many_subscribers:
            cell.skipped = contender.no_many_subscribers
        planned.append((cell, contender))
    return planned


def repetitions(scenario: Scenario, settings: RunSettings) -> range:
    """The repetitions to run, -1 being the warm-up.

    Idle memory is one measurement; the chat's thousands of subscriptions make a
    warm-up as long as a repetition, so it runs at most 3 times, without one.
    """
    repeats = {"memory": 1, "chat": min(3, settings.repeat)}.get(scenario.kind, settings.repeat)
    warmup = scenario.kind not in ("memory", "chat")
    return range(-1 if warmup else 0, repeats)


async def run_repetition(
    scenario: Scenario,
    size: int,
    planned: list[tuple[Cell, Contender]],
    settings: RunSettings,
    rep: int,
) -> None:
    """Repetition `rep` (-1: the warm-up, not recorded) of every live contender, in turn."""
    count = scenario.count(size, settings.quick)
    for cell, contender in planned:
        if cell.skipped is not None or cell.error is not None:
            continue
        started = time.perf_counter()
        try:
            n = scenario.warmup_count(size, settings.quick) if rep < 0 else count
            record = await _measure_once(scenario, contender, size, n, settings)
        except Exception as exc:  # a contender that fails is reported, not fatal
            leaf = _first_leaf(exc)
            cell.error = f"{type(leaf).__name__}: {leaf}"
            print(f"  ! {contender.name}: {cell.error}", file=sys.stderr)
            continue
        if rep >= 0:
            record["wall_seconds"] = time.perf_counter() - started
            cell.reps.append(record)


def _first_leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
