"""Percentiles of measured samples, shared by ``channels bench`` and the benchmark suite.

One definition, so that a p99 printed by the command line and one in the
suite's tables mean the same thing: the nearest-rank percentile, i.e. the
smallest sample that at least `quantile` of the samples do not exceed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["percentile"]


def percentile(samples: Iterable[float], quantile: float) -> float:
    """The nearest-rank `quantile` (0 to 1) of `samples`; NaN when there are none."""
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be between 0 and 1, got {quantile!r}")
    ordered = sorted(samples)
    if not ordered:
        return math.nan
    index = min(len(ordered) - 1, max(0, math.ceil(quantile * len(ordered)) - 1))
    return ordered[index]
