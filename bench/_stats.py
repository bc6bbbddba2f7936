"""Summaries of samples and ratios between clients, with their spread."""

from __future__ import annotations

import math
import random
import statistics
from typing import Any, Dict, List, Optional, Sequence

BOOTSTRAP_ROUNDS = 2000
CONFIDENCE = 0.90


def percentile(values: Sequence[float], q: float) -> float:
    """Percentile ``q`` (0-100) with linear interpolation between ranks."""
    data = sorted(values)
    if not data:
        return math.nan
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def summary(samples: Sequence[float]) -> Dict[str, Any]:
    """Median, p10, p90, min, max, mean and count of samples."""
    return {
        "n": len(samples),
        "median": statistics.median(samples),
        "p10": percentile(samples, 10),
        "p90": percentile(samples, 90),
        "min": min(samples),
        "max": max(samples),
        "mean": statistics.fmean(samples),
    }


def ratio(a: Sequence[float], b: Sequence[float], *, seed: int = 1) -> Optional[Dict[str, Any]]:
    """Ratio of the medians of ``a`` and ``b`` with a bootstrap interval.

    Both sample sets are resampled with replacement ``BOOTSTRAP_ROUNDS`` times;
    the interval holds the central ``CONFIDENCE`` share of the resampled
    ratios. With a single sample on either side there is no interval.
    """
    if not a or not b:
        return None
    mb = statistics.median(b)
    if mb == 0:
        return None
    result: Dict[str, Any] = {"median": statistics.median(a) / mb, "ci90": None}
    if len(a) > 1 or len(b) > 1:
        rng = random.Random(seed)
        ratios: List[float] = []
        for _ in range(BOOTSTRAP_ROUNDS):
            ra = statistics.median(rng.choices(a, k=len(a)))
            rb = statistics.median(rng.choices(b, k=len(b)))
            if rb:
                ratios.append(ra / rb)
        tail = (1 - CONFIDENCE) / 2 * 100
        result["ci90"] = [percentile(ratios, tail), percentile(ratios, 100 - tail)]
    return result
