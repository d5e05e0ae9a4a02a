"""Log-scale latency buckets, the one histogram of the gateway: the store's latency tables and the routing health
board both count in them.

A value in ms falls in bucket floor(log(v) / log(RATIO)); a bucket reads back as its geometric middle, so a
percentile from buckets is within ±RATIO/2 (about 5%) of the exact one. Bucket numbers are kept in the store's
rows, so RATIO and FLOOR_MS never change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

RATIO = 1.1
_LOG = math.log(RATIO)
FLOOR_MS = 0.01  # anything faster is counted here


def bucket_of(ms: float) -> int:
    return math.floor(math.log(max(ms, FLOOR_MS)) / _LOG)


def value_of(bucket: int) -> float:
    return math.pow(RATIO, bucket + 0.5)


def percentiles(counts: Iterable[tuple[int, int]], qs: Iterable[float]) -> dict[float, float | None]:
    """Percentiles (0..100) from (bucket, count) pairs; None for every q when there is no data."""
    pairs = sorted(counts)
    total = sum(n for _, n in pairs)
    out: dict[float, float | None] = {}
    for q in qs:
        if total == 0:
            out[q] = None
            continue
        rank = max(1, math.ceil(q / 100 * total))
        seen = 0
        for b, n in pairs:
            seen += n
            if seen >= rank:
                out[q] = round(value_of(b), 3)
                break
    return out
