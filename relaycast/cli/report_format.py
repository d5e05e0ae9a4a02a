"""How the command line writes rates and latencies: the same way as the dashboard (relaycast/dashboard/static/app.js,
`fmtPct` and `fmtBucketMs`), so the numbers agree wherever they are read.

- A rate is a percent with one decimal: `30.8%` (`<0.1%` for a rate above 0 that would round to `0.0%`).
- A latency percentile read from the histogram (relaycast.store.histogram: 10% wide buckets, read back as their
  geometric middle) is shown as the upper edge of its bucket rounded up to two significant digits: `≤ 180 ms`
  for a middle of 163.873 ms. It is a bound the true percentile is under, with no more digits than it has.
"""

from __future__ import annotations

import math

from relaycast.store.histogram import RATIO, bucket_of


def fmt_rate(rate: float | None) -> str:
    if rate is None:
        return "-"
    pct = rate * 100
    if 0 < pct < 0.05:
        return "<0.1%"
    return f"{pct:.1f}%"


def bucket_upper_ms(ms: float) -> float:
    """The upper edge of the histogram bucket `ms` falls in, rounded up to two significant digits."""
    edge = math.pow(RATIO, bucket_of(ms) + 1)
    step = math.pow(10, math.floor(math.log10(edge)) - 1)
    return round(math.ceil(round(edge / step, 9)) * step, 9)


def fmt_bucket_ms(ms: float | None) -> str:
    """A percentile from histogram buckets: `≤ 180 ms`, `≤ 1.3 s`, `≤ 4.5 ms`; `-` when there is none."""
    if ms is None:
        return "-"
    return "≤ " + _duration(bucket_upper_ms(ms))


def _duration(ms: float) -> str:
    if ms >= 1000:
        s = ms / 1000
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if ms >= 10:
        return f"{ms:.0f} ms"
    if ms >= 1:
        return f"{ms:.1f} ms"
    return f"{ms:.2g} ms"
